// ingot's pause for arm64: the source of the code bytes in runtime/pause/elf.go.
// TestCodeMatchesSource assembles this file and compares the result with those bytes.
	.text
	.globl _start
_start:
	movz x9, #0x4002		// the signal set {SIGINT, SIGTERM, SIGCHLD} on the stack
	movk x9, #0x1, lsl #16
	sub sp, sp, #16
	str x9, [sp]
	mov x0, #0			// rt_sigprocmask(SIG_BLOCK, &set, NULL, 8)
	mov x1, sp
	mov x2, #0
	mov x3, #8
	mov x8, #135
	svc #0
wait:
	mov x0, sp			// rt_sigtimedwait(&set, NULL, NULL, 8)
	mov x1, #0
	mov x2, #0
	mov x3, #8
	mov x8, #137
	svc #0
	tbnz x0, #63, wait		// EINTR (a stop and continue, say): wait again
	cmp x0, #17
	b.ne exit			// SIGINT or SIGTERM
reap:
	mov x0, #-1			// wait4(-1, NULL, WNOHANG, NULL) until nothing is left to reap
	mov x1, #0
	mov x2, #1
	mov x3, #0
	mov x8, #260
	svc #0
	cmp x0, #0
	b.gt reap
	b wait
exit:
	mov x0, #0			// exit_group(0)
	mov x8, #94
	svc #0
