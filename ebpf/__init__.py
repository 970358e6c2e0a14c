"""BCC eBPF probes of the agents' syscalls and network latency: issue #5. Not implemented yet."""
