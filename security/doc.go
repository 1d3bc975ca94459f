// Package security decides what a sandboxed process may do: which
// capabilities it keeps, which paths of /proc and /sys it may not see or
// write, and whether it may gain privileges. Package sandbox applies it.
package security
