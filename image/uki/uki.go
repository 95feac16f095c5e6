// Package uki assembles unified kernel images: systemd's EFI stub (linuxx64.efi.stub,
// linuxaa64.efi.stub from Debian bookworm's systemd-boot-efi 252) with the kernel, initrd, command
// line and os-release appended as extra PE sections. It edits the PE headers itself so that no
// objcopy or ukify is needed on the build host, and it never moves, resizes or rewrites anything
// the stub already contains: the stub's code relocates itself and must stay byte-for-byte intact.
//
// What systemd-stub 252 reads, by section name:
//
//   - .linux: the kernel (bzImage on x86_64, uncompressed arm64 Image). Both are PE files; the
//     stub hands the section to the firmware's LoadImage, which copies it into a fresh allocation
//     aligned as the kernel's own headers ask, so its placement inside the UKI needs no extra
//     alignment. (Only kernels older than 5.8, whose PE header says image version 0, take the
//     x86 EFI handover path instead.)
//   - .initrd: served to the kernel through the LINUX_INITRD_MEDIA_GUID device path.
//   - .cmdline: the built-in kernel command line. Outside Secure Boot, load options passed by the
//     boot manager replace it.
//   - .osrel: not parsed by the stub, only measured; systemd-boot reads it to name the entry
//     (PRETTY_NAME, ID, VERSION_ID, IMAGE_ID …). See OSRelease.
//   - .splash, .dtb, .pcrsig, .pcrpkey: optional, unused by ingot. .uname is read only by newer
//     tools (systemd-boot/kernel-install ≥254) and ignored by 252.
//
// The stub finds each section by walking the in-memory section table and uses VirtualAddress
// and VirtualSize. Hence the layout rules Assemble follows:
//
//   - VirtualSize is the exact payload length. The raw data is zero-padded to FileAlignment, and
//     only VirtualSize keeps that padding out of the command line and the initrd.
//   - New sections come after every existing section in the table and in ascending, disjoint
//     virtual addresses: stub 252 warns "Overlapping PE sections detected" when a section starts
//     below the end of the one listed before it.
//   - Section headers go into the slack between the section table and SizeOfHeaders, because
//     moving the stub's sections would break its code. A stub without that slack is rejected.
//   - Raw data goes after the end of the stub file, so trailing bytes that no section covers
//     (the COFF symbol table in the x86_64 stub, the .sbat/.sdmagic tail in the arm64 one) are
//     kept.
//
// Section order is the caller's: the stub looks sections up by name, so any order boots.
//
// The package never signs. A stub that carries an Authenticode certificate table is rejected:
// appending sections would invalidate the signature, and the table has to stay at the end of the
// file. Sign the assembled UKI instead.
package uki

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Section is one PE section to append to the stub.
type Section struct {
	Name string // at most 8 bytes, e.g. ".linux"
	Data []byte
}

// Kinds of failure, for errors.Is.
var (
	ErrNotPE       = errors.New("not a PE32+ image")
	ErrUnsupported = errors.New("unsupported stub")
	ErrSection     = errors.New("invalid section")
	ErrNoRoom      = errors.New("no room in PE headers")
)

// PE/COFF layout constants, from the Microsoft PE format specification.
const (
	peSigSize         = 4
	coffHeaderSize    = 20
	sectionHeaderSize = 40
	maxNameLen        = 8

	magicPE32     = 0x10b
	magicPE32Plus = 0x20b

	// Offsets inside the PE32+ optional header.
	optSizeOfInitializedData = 8
	optSectionAlignment      = 32
	optFileAlignment         = 36
	optSizeOfImage           = 56
	optSizeOfHeaders         = 60
	optCheckSum              = 64
	optNumberOfRvaAndSizes   = 108
	optDataDirectory         = 112

	dirSecurity = 4 // certificate table; its "address" is a file offset

	scnCntInitializedData = 0x00000040
	scnMemRead            = 0x40000000
)

// header is what Assemble needs from the stub's headers, with the offsets to patch.
type header struct {
	coff       int // COFF file header
	opt        int // optional header
	table      int // section table
	nsections  int
	fileAlign  uint32
	sectAlign  uint32
	sizeOfHdrs uint32
	sizeOfImg  uint32
	initData   uint32
	dirs       []dataDir
	sections   []sectionHeader
}

type dataDir struct{ va, size uint32 }

type sectionHeader struct {
	name            string
	virtualSize     uint32
	virtualAddress  uint32
	sizeOfRawData   uint32
	pointerToRaw    uint32
	characteristics uint32
}

// Assemble returns a copy of stub with sections appended, in order, as initialized read-only
// data. The result is a function of its inputs alone: the same stub and sections give the same
// bytes.
func Assemble(stub []byte, sections []Section) ([]byte, error) {
	h, err := parseHeader(stub)
	if err != nil {
		return nil, fmt.Errorf("parse EFI stub: %w", err)
	}
	if err := checkSections(h, sections); err != nil {
		return nil, err
	}
	if err := checkHeaderRoom(h, len(sections)); err != nil {
		return nil, err
	}

	// New virtual addresses start past both the highest section and SizeOfImage: the loader
	// reserves all of SizeOfImage for the stub, and anything past its last section (a .bss the
	// headers do not describe) is still the stub's memory.
	vaEnd := uint64(h.sizeOfImg)
	for _, s := range h.sections {
		vaEnd = max(vaEnd, uint64(s.virtualAddress)+uint64(max(s.virtualSize, s.sizeOfRawData)))
	}
	va := alignUp(vaEnd, h.sectAlign)
	// Raw data starts past the end of the file, not of the last section, so trailing data
	// that no section covers survives.
	off := alignUp(uint64(len(stub)), h.fileAlign)
	initData := uint64(h.initData)

	added := make([]sectionHeader, len(sections))
	for i, s := range sections {
		raw := alignUp(uint64(len(s.Data)), h.fileAlign)
		if alignUp(va+raw, h.sectAlign) > math.MaxUint32 || off+raw > math.MaxUint32 {
			return nil, fmt.Errorf("append section %s: image would exceed the 4 GiB PE limit: %w", s.Name, ErrSection)
		}
		added[i] = sectionHeader{
			name:            s.Name,
			virtualSize:     uint32(len(s.Data)),
			virtualAddress:  uint32(va),
			sizeOfRawData:   uint32(raw),
			pointerToRaw:    uint32(off),
			characteristics: scnCntInitializedData | scnMemRead,
		}
		va = alignUp(va+raw, h.sectAlign) // raw >= len(Data), so raw is the extent in memory
		off += raw
		initData += raw
	}

	out := make([]byte, off)
	copy(out, stub)
	le := binary.LittleEndian
	for i, s := range added {
		b := out[h.table+(h.nsections+i)*sectionHeaderSize:][:sectionHeaderSize]
		clear(b) // the slack may hold linker padding (NOPs in the arm64 stub)
		copy(b[0:8], s.name)
		le.PutUint32(b[8:], s.virtualSize)
		le.PutUint32(b[12:], s.virtualAddress)
		le.PutUint32(b[16:], s.sizeOfRawData)
		le.PutUint32(b[20:], s.pointerToRaw)
		le.PutUint32(b[36:], s.characteristics)
		copy(out[s.pointerToRaw:], sections[i].Data)
	}
	le.PutUint16(out[h.coff+2:], uint16(h.nsections+len(added)))
	le.PutUint32(out[h.opt+optSizeOfImage:], uint32(va))
	// SizeOfInitializedData is advisory; saturate rather than fail on absurd stubs.
	le.PutUint32(out[h.opt+optSizeOfInitializedData:], uint32(min(initData, math.MaxUint32)))
	le.PutUint32(out[h.opt+optCheckSum:], 0)
	le.PutUint32(out[h.opt+optCheckSum:], checksum(out))
	return out, nil
}

// parseHeader validates the DOS, PE and PE32+ optional headers and reads the section table.
func parseHeader(b []byte) (*header, error) {
	le := binary.LittleEndian
	if len(b) < 0x40 || b[0] != 'M' || b[1] != 'Z' {
		return nil, fmt.Errorf("no MZ header: %w", ErrNotPE)
	}
	pe := uint64(le.Uint32(b[0x3c:]))
	if pe+peSigSize+coffHeaderSize > uint64(len(b)) {
		return nil, fmt.Errorf("PE header offset %#x beyond end of file (%d bytes): %w", pe, len(b), ErrNotPE)
	}
	if string(b[pe:pe+peSigSize]) != "PE\x00\x00" {
		return nil, fmt.Errorf("no PE signature at %#x: %w", pe, ErrNotPE)
	}
	h := &header{coff: int(pe) + peSigSize}
	h.nsections = int(le.Uint16(b[h.coff+2:]))
	optSize := int(le.Uint16(b[h.coff+16:]))
	h.opt = h.coff + coffHeaderSize
	h.table = h.opt + optSize
	if optSize < 2 || h.opt+optSize > len(b) {
		return nil, fmt.Errorf("optional header (%d bytes) truncated: %w", optSize, ErrNotPE)
	}
	switch magic := le.Uint16(b[h.opt:]); magic {
	case magicPE32Plus:
	case magicPE32:
		return nil, fmt.Errorf("PE32 (32-bit) images are not supported: %w", ErrUnsupported)
	default:
		return nil, fmt.Errorf("optional header magic %#x: %w", magic, ErrNotPE)
	}
	if optSize < optDataDirectory {
		return nil, fmt.Errorf("PE32+ optional header too short (%d bytes): %w", optSize, ErrNotPE)
	}
	h.sectAlign = le.Uint32(b[h.opt+optSectionAlignment:])
	h.fileAlign = le.Uint32(b[h.opt+optFileAlignment:])
	h.sizeOfImg = le.Uint32(b[h.opt+optSizeOfImage:])
	h.sizeOfHdrs = le.Uint32(b[h.opt+optSizeOfHeaders:])
	h.initData = le.Uint32(b[h.opt+optSizeOfInitializedData:])
	if !powerOfTwo(h.fileAlign) || !powerOfTwo(h.sectAlign) {
		return nil, fmt.Errorf("alignments (file %#x, section %#x) are not powers of two: %w", h.fileAlign, h.sectAlign, ErrNotPE)
	}
	ndirs := min(int(le.Uint32(b[h.opt+optNumberOfRvaAndSizes:])), (optSize-optDataDirectory)/8)
	for i := range ndirs {
		d := b[h.opt+optDataDirectory+8*i:]
		h.dirs = append(h.dirs, dataDir{va: le.Uint32(d), size: le.Uint32(d[4:])})
	}
	if len(h.dirs) > dirSecurity && h.dirs[dirSecurity].size != 0 {
		return nil, fmt.Errorf("stub is signed (certificate table of %d bytes); sign the assembled image instead: %w",
			h.dirs[dirSecurity].size, ErrUnsupported)
	}
	if h.table+h.nsections*sectionHeaderSize > len(b) {
		return nil, fmt.Errorf("section table (%d sections) truncated: %w", h.nsections, ErrNotPE)
	}
	for i := range h.nsections {
		s := b[h.table+i*sectionHeaderSize:]
		sh := sectionHeader{
			name:            trimName(s[:8]),
			virtualSize:     le.Uint32(s[8:]),
			virtualAddress:  le.Uint32(s[12:]),
			sizeOfRawData:   le.Uint32(s[16:]),
			pointerToRaw:    le.Uint32(s[20:]),
			characteristics: le.Uint32(s[36:]),
		}
		if sh.sizeOfRawData != 0 && uint64(sh.pointerToRaw)+uint64(sh.sizeOfRawData) > uint64(len(b)) {
			return nil, fmt.Errorf("section %s raw data runs past end of file: %w", sh.name, ErrNotPE)
		}
		h.sections = append(h.sections, sh)
	}
	return h, nil
}

// checkSections rejects names the section table cannot hold or the stub would confuse.
func checkSections(h *header, sections []Section) error {
	seen := make(map[string]bool, len(h.sections)+len(sections))
	for _, s := range h.sections {
		seen[s.name] = true
	}
	for _, s := range sections {
		switch {
		case s.Name == "":
			return fmt.Errorf("append section: empty name: %w", ErrSection)
		case len(s.Name) > maxNameLen:
			return fmt.Errorf("append section %q: name longer than %d bytes: %w", s.Name, maxNameLen, ErrSection)
		case s.Name[0] == '/':
			// "/n" names point into the COFF string table, which an image file has no use for.
			return fmt.Errorf("append section %q: name starts with '/': %w", s.Name, ErrSection)
		case trimName([]byte(s.Name)) != s.Name:
			return fmt.Errorf("append section %q: name contains NUL: %w", s.Name, ErrSection)
		case len(s.Data) == 0:
			// Stub 252 treats a section of size zero as absent; an empty one is a caller bug.
			return fmt.Errorf("append section %s: no data: %w", s.Name, ErrSection)
		case seen[s.Name]:
			return fmt.Errorf("append section %s: name already present: %w", s.Name, ErrSection)
		}
		seen[s.Name] = true
	}
	return nil
}

// checkHeaderRoom makes sure n more section headers fit between the section table and the first
// byte anything else uses, without moving a section.
func checkHeaderRoom(h *header, n int) error {
	start := uint64(h.table + h.nsections*sectionHeaderSize)
	need := start + uint64(n)*sectionHeaderSize
	limit := uint64(h.sizeOfHdrs)
	for _, s := range h.sections {
		if s.sizeOfRawData != 0 {
			limit = min(limit, uint64(s.pointerToRaw))
		}
		limit = min(limit, uint64(s.virtualAddress))
	}
	if need > limit {
		return fmt.Errorf("append %d section headers: table would end at %#x, past the %#x bytes of header space: %w",
			n, need, limit, ErrNoRoom)
	}
	// Headers map at RVA == file offset, so a directory living in the slack would be overwritten.
	for i, d := range h.dirs {
		if i != dirSecurity && d.size != 0 && uint64(d.va) < need && uint64(d.va)+uint64(d.size) > start {
			return fmt.Errorf("append %d section headers: data directory %d at %#x occupies the header slack: %w",
				n, i, d.va, ErrNoRoom)
		}
	}
	return nil
}

// checksum is the PE image checksum (as in ImageHlp's CheckSumMappedFile): a 16-bit sum with
// end-around carry over the file as little-endian words, plus the file length. The caller zeroes
// the CheckSum field first.
func checksum(b []byte) uint32 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.LittleEndian.Uint16(b[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return sum + uint32(len(b))
}

func trimName(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

func powerOfTwo(v uint32) bool { return v != 0 && v&(v-1) == 0 }

func alignUp(v uint64, a uint32) uint64 { return (v + uint64(a) - 1) &^ (uint64(a) - 1) }
