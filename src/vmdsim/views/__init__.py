"""What a kernel engineer looks at: lspci, /proc/interrupts, load tables, plots."""
