package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKmemV2KiB(t *testing.T) {
	dir := t.TempDir()
	stat := filepath.Join(dir, "memory.stat")
	if err := os.WriteFile(stat, []byte("anon 4096\nfile 0\nkernel_stack 16384\nkernel 167936\nslab 1024\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := kmemV2KiB(stat); got != 164 {
		t.Errorf("kmemV2KiB = %d, want 164 (the kernel line, not kernel_stack)", got)
	}
	if err := os.WriteFile(stat, []byte("anon 4096\nkernel_stack 16384\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := kmemV2KiB(stat); got != -1 {
		t.Errorf("kmemV2KiB without a kernel line = %d, want -1", got)
	}
	if got := kmemV2KiB(filepath.Join(dir, "missing")); got != -1 {
		t.Errorf("kmemV2KiB of a missing file = %d, want -1", got)
	}
}
