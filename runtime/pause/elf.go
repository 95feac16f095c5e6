// Package pause is the program that holds a pod's namespaces: the pause container's only process.
// It does nothing, reaps any child it inherits (when the pod shares its pid namespace it is that
// namespace's init) and exits 0 on SIGTERM or SIGINT.
//
// It is not Go. A Go program costs a pod about 2.5 MB of PSS for doing nothing (its runtime, its
// heap, its threads); this one is a static ELF of a few hundred bytes, written here for the node's
// arch, whose process is one page of code and one of stack. It makes four system calls, none of
// them outside any seccomp profile a pod may get: rt_sigprocmask, rt_sigtimedwait, wait4 and
// exit_group. The signals it waits for are blocked rather than caught, so they reach it even as a
// pid namespace's init (the kernel drops an init's signals only when their action is the default,
// and a blocked signal is always queued).
//
// The code of each arch is assembled from testdata/pause_<arch>.S; TestCodeMatchesSource checks
// that the bytes below are what that source assembles to.
package pause

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
)

// code is the machine code of pause per GOARCH (see testdata/pause_<arch>.S).
var code = map[string]struct {
	machine elf.Machine
	text    []byte
}{
	"amd64": {elf.EM_X86_64, []byte{
		0x68, 0x02, 0x40, 0x01, 0x00, 0x31, 0xff, 0x48, 0x89, 0xe6, 0x31, 0xd2,
		0x41, 0xba, 0x08, 0x00, 0x00, 0x00, 0xb8, 0x0e, 0x00, 0x00, 0x00, 0x0f,
		0x05, 0x48, 0x89, 0xe7, 0x31, 0xf6, 0x31, 0xd2, 0x41, 0xba, 0x08, 0x00,
		0x00, 0x00, 0xb8, 0x80, 0x00, 0x00, 0x00, 0x0f, 0x05, 0x85, 0xc0, 0x78,
		0xe8, 0x83, 0xf8, 0x11, 0x75, 0x1c, 0xbf, 0xff, 0xff, 0xff, 0xff, 0x31,
		0xf6, 0xba, 0x01, 0x00, 0x00, 0x00, 0x45, 0x31, 0xd2, 0xb8, 0x3d, 0x00,
		0x00, 0x00, 0x0f, 0x05, 0x85, 0xc0, 0x7f, 0xe6, 0xeb, 0xc7, 0x31, 0xff,
		0xb8, 0xe7, 0x00, 0x00, 0x00, 0x0f, 0x05,
	}},
	"arm64": {elf.EM_AARCH64, []byte{
		0x49, 0x00, 0x88, 0xd2, 0x29, 0x00, 0xa0, 0xf2, 0xff, 0x43, 0x00, 0xd1,
		0xe9, 0x03, 0x00, 0xf9, 0x00, 0x00, 0x80, 0xd2, 0xe1, 0x03, 0x00, 0x91,
		0x02, 0x00, 0x80, 0xd2, 0x03, 0x01, 0x80, 0xd2, 0xe8, 0x10, 0x80, 0xd2,
		0x01, 0x00, 0x00, 0xd4, 0xe0, 0x03, 0x00, 0x91, 0x01, 0x00, 0x80, 0xd2,
		0x02, 0x00, 0x80, 0xd2, 0x03, 0x01, 0x80, 0xd2, 0x28, 0x11, 0x80, 0xd2,
		0x01, 0x00, 0x00, 0xd4, 0x40, 0xff, 0xff, 0xb7, 0x1f, 0x44, 0x00, 0xf1,
		0x41, 0x01, 0x00, 0x54, 0x00, 0x00, 0x80, 0x92, 0x01, 0x00, 0x80, 0xd2,
		0x22, 0x00, 0x80, 0xd2, 0x03, 0x00, 0x80, 0xd2, 0x88, 0x20, 0x80, 0xd2,
		0x01, 0x00, 0x00, 0xd4, 0x1f, 0x00, 0x00, 0xf1, 0x2c, 0xff, 0xff, 0x54,
		0xef, 0xff, 0xff, 0x17, 0x00, 0x00, 0x80, 0xd2, 0xc8, 0x0b, 0x80, 0xd2,
		0x01, 0x00, 0x00, 0xd4,
	}},
}

const (
	// base is where the file is mapped: the classic address of a static executable, a multiple of
	// every page size either arch runs with (4 KiB to 64 KiB).
	base  = 0x400000
	align = 0x10000
	// The file is the ELF header, two program headers (the code's segment, and a non-executable
	// stack), then the code.
	ehsize    = 64
	phentsize = 56
	phnum     = 2
	textOff   = ehsize + phnum*phentsize
)

// Binary is the pause executable for goarch (amd64 or arm64).
func Binary(goarch string) ([]byte, error) {
	c, ok := code[goarch]
	if !ok {
		return nil, fmt.Errorf("pause: no code for arch %q (there is for amd64 and arm64)", goarch)
	}
	size := uint64(textOff + len(c.text))
	h := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(c.machine), Version: uint32(elf.EV_CURRENT),
		Entry: base + textOff, Phoff: ehsize, Ehsize: ehsize, Phentsize: phentsize, Phnum: phnum,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	h.Ident[elf.EI_OSABI] = byte(elf.ELFOSABI_NONE)
	progs := []elf.Prog64{
		{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: 0, Vaddr: base, Paddr: base,
			Filesz: size, Memsz: size, Align: align},
		// Without PT_GNU_STACK an x86_64 kernel may map the stack executable.
		{Type: uint32(elf.PT_GNU_STACK), Flags: uint32(elf.PF_R | elf.PF_W), Align: 16},
	}
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, h)
	binary.Write(&b, binary.LittleEndian, progs)
	if b.Len() != textOff {
		return nil, fmt.Errorf("pause: headers take %d bytes, want %d", b.Len(), textOff)
	}
	b.Write(c.text)
	return b.Bytes(), nil
}
