# Run by `make demo` inside a sandbox, to show what the sandbox sees.
echo "hello from $(hostname), uid $(id -u), in a sandbox"
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
echo "processes:"
ps -o pid,user,comm
echo "network interfaces: $(ls /sys/class/net)"
touch /etc/x 2>/dev/null || echo "the root filesystem is read-only"
