# ingot's pause for x86_64: the source of the code bytes in runtime/pause/elf.go.
# TestCodeMatchesSource assembles this file and compares the result with those bytes.
	.intel_syntax noprefix
	.text
	.globl _start
_start:
	push 0x14002		# the signal set {SIGINT, SIGTERM, SIGCHLD} on the stack
	xor edi, edi		# rt_sigprocmask(SIG_BLOCK, &set, NULL, 8)
	mov rsi, rsp
	xor edx, edx
	mov r10d, 8
	mov eax, 14
	syscall
wait:
	mov rdi, rsp		# rt_sigtimedwait(&set, NULL, NULL, 8)
	xor esi, esi
	xor edx, edx
	mov r10d, 8
	mov eax, 128
	syscall
	test eax, eax
	js wait			# EINTR (a stop and continue, say): wait again
	cmp eax, 17
	jne exit		# SIGINT or SIGTERM
reap:
	mov edi, -1		# wait4(-1, NULL, WNOHANG, NULL) until nothing is left to reap
	xor esi, esi
	mov edx, 1
	xor r10d, r10d
	mov eax, 61
	syscall
	test eax, eax
	jg reap
	jmp wait
exit:
	xor edi, edi		# exit_group(0)
	mov eax, 231
	syscall
