package uki

import (
	"bytes"
	"context"
	"debug/pe"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

// synthStub describes a minimal PE32+ image built by the tests, so the unit tests need no real
// EFI stub.
type synthStub struct {
	magic      uint16 // optional header magic; 0 means PE32+
	sectAlign  uint32
	fileAlign  uint32
	sizeOfHdrs uint32
	sizeOfImg  uint32 // 0: derived from the sections
	sections   []synthSection
	overlay    []byte // bytes after the last section that no section covers
	certSize   uint32 // >0 adds a certificate table as the overlay
	slackFill  byte   // fill for the header bytes after the section table
	dirInSlack bool   // point the debug directory into the header slack
}

type synthSection struct {
	name  string
	va    uint32
	vsize uint32 // 0: len(data)
	data  []byte
}

const synthPEOffset = 0x80

func (s synthStub) build(t *testing.T) []byte {
	t.Helper()
	le := binary.LittleEndian
	optSize := 112 + 16*8
	coff := synthPEOffset + 4
	opt := coff + 20
	table := opt + optSize

	b := make([]byte, s.sizeOfHdrs)
	copy(b, "MZ")
	le.PutUint32(b[0x3c:], synthPEOffset)
	copy(b[synthPEOffset:], "PE\x00\x00")
	le.PutUint16(b[coff:], 0x8664)
	le.PutUint16(b[coff+2:], uint16(len(s.sections)))
	le.PutUint16(b[coff+16:], uint16(optSize))
	le.PutUint16(b[coff+18:], 0x206)
	magic := s.magic
	if magic == 0 {
		magic = 0x20b
	}
	le.PutUint16(b[opt:], magic)
	le.PutUint32(b[opt+32:], s.sectAlign)
	le.PutUint32(b[opt+36:], s.fileAlign)
	le.PutUint32(b[opt+60:], s.sizeOfHdrs)
	le.PutUint16(b[opt+68:], 10) // EFI application
	le.PutUint32(b[opt+108:], 16)
	tableEnd := table + len(s.sections)*40
	if tableEnd > len(b) {
		t.Fatalf("synthetic stub: section table ends at %#x, past SizeOfHeaders %#x", tableEnd, len(b))
	}
	for i := tableEnd; i < len(b); i++ {
		b[i] = s.slackFill
	}
	if s.dirInSlack {
		le.PutUint32(b[opt+112+6*8:], uint32(tableEnd))
		le.PutUint32(b[opt+112+6*8+4:], 28)
	}

	var imgEnd, initData uint32
	for i, sec := range s.sections {
		raw := uint32(alignUp(uint64(len(sec.data)), s.fileAlign))
		vsize := sec.vsize
		if vsize == 0 {
			vsize = uint32(len(sec.data))
		}
		h := b[table+i*40:]
		copy(h[:8], sec.name)
		le.PutUint32(h[8:], vsize)
		le.PutUint32(h[12:], sec.va)
		le.PutUint32(h[16:], raw)
		le.PutUint32(h[20:], uint32(len(b)))
		le.PutUint32(h[36:], 0x40000040)
		b = append(b, sec.data...)
		b = append(b, make([]byte, int(raw)-len(sec.data))...)
		imgEnd = max(imgEnd, sec.va+max(vsize, raw))
		initData += raw
	}
	le.PutUint32(b[opt+8:], initData)
	img := s.sizeOfImg
	if img == 0 {
		img = uint32(alignUp(uint64(imgEnd), s.sectAlign))
	}
	le.PutUint32(b[opt+56:], img)
	if s.certSize > 0 {
		le.PutUint32(b[opt+112+4*8:], uint32(len(b)))
		le.PutUint32(b[opt+112+4*8+4:], s.certSize)
		b = append(b, make([]byte, s.certSize)...)
	}
	b = append(b, s.overlay...)
	le.PutUint32(b[opt+64:], refChecksum(b))
	return b
}

// baseStub resembles the arm64 systemd stub: 4 KiB sections, 512-byte file alignment.
func baseStub() synthStub {
	return synthStub{
		sectAlign:  0x1000,
		fileAlign:  0x200,
		sizeOfHdrs: 0x400,
		sections: []synthSection{
			{name: ".text", va: 0x1000, data: bytes.Repeat([]byte{0xc3}, 0x1234)},
			{name: ".data", va: 0x3000, vsize: 0x2000, data: []byte("stub data")},
		},
	}
}

// refChecksum recomputes the PE checksum independently of checksum(): it locates the CheckSum
// field itself, skips it, and folds the carries once at the end instead of per word.
func refChecksum(b []byte) uint32 {
	off := int(binary.LittleEndian.Uint32(b[0x3c:])) + 4 + 20 + 64
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		if i >= off && i < off+4 {
			continue
		}
		w := uint64(b[i])
		if i+1 < len(b) {
			w |= uint64(b[i+1]) << 8
		}
		sum += w
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint32(sum) + uint32(len(b))
}

func ukiSections(kernel []byte) []Section {
	return []Section{
		{".osrel", OSRelease(map[string]string{"ID": "ingot", "NAME": "ingot", "VERSION_ID": "1"})},
		{".cmdline", []byte("console=ttyS0 quiet")},
		{".uname", []byte("6.1.0-56-cloud-amd64")},
		{".linux", kernel},
		{".initrd", bytes.Repeat([]byte("070701"), 1000)},
	}
}

func TestAssemble(t *testing.T) {
	tests := []struct {
		name     string
		stub     synthStub
		sections []Section
	}{
		{"typical UKI", baseStub(), ukiSections(bytes.Repeat([]byte("kernel"), 5000))},
		{"no sections", baseStub(), nil},
		{"one byte", baseStub(), []Section{{".cmdline", []byte("x")}}},
		{"exactly file aligned", baseStub(), []Section{{".initrd", make([]byte, 0x400)}}},
		{"eight-byte name", baseStub(), []Section{{".abcdefg", []byte("eight")}}},
		{
			// Like the x86_64 stub: 512-byte section alignment, a section at an RVA that is not
			// even a multiple of that, and a COFF symbol table trailing the sections.
			"x86_64-like stub with overlay",
			func() synthStub {
				s := baseStub()
				s.sectAlign = 0x200
				s.sections = append(s.sections, synthSection{name: ".sdmagic", va: 0x5100, data: []byte("#### LoaderInfo ####")})
				s.overlay = bytes.Repeat([]byte{0xab}, 0x1d5)
				return s
			}(),
			ukiSections(bytes.Repeat([]byte{1, 2, 3}, 999)),
		},
		{
			// Like the arm64 stub: the slack after the section table is NOP padding.
			"nonzero header slack",
			func() synthStub { s := baseStub(); s.slackFill = 0xd5; return s }(),
			ukiSections([]byte("Image")),
		},
		{
			"SizeOfImage past last section",
			func() synthStub { s := baseStub(); s.sizeOfImg = 0x9000; return s }(),
			[]Section{{".linux", []byte("kernel")}},
		},
		{
			// 0x80+4+20+240 = 0x188 is the table; two stub sections plus five new ones end at 0x2b0.
			"headers fill the slack exactly",
			func() synthStub { s := baseStub(); s.sizeOfHdrs = 0x2b0; return s }(),
			ukiSections([]byte("kernel")),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := tt.stub.build(t)
			out, err := Assemble(stub, tt.sections)
			if err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			verify(t, stub, out, tt.sections)
		})
	}
}

// verify checks out, the result of Assemble(stub, sections), with debug/pe and by comparing bytes.
func verify(t *testing.T, stub, out []byte, sections []Section) {
	t.Helper()
	in, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		t.Fatalf("parse stub: %v", err)
	}
	f, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("parse result: %v", err)
	}
	inOH := in.OptionalHeader.(*pe.OptionalHeader64)
	oh, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		t.Fatalf("result optional header is %T, want PE32+", f.OptionalHeader)
	}
	n := len(in.Sections)
	if len(f.Sections) != n+len(sections) {
		t.Fatalf("result has %d sections, want %d", len(f.Sections), n+len(sections))
	}

	// Everything the stub had is where it was.
	for i, s := range in.Sections {
		got := f.Sections[i]
		if got.SectionHeader != s.SectionHeader {
			t.Errorf("stub section %s header changed: %+v, want %+v", s.Name, got.SectionHeader, s.SectionHeader)
		}
	}
	le := binary.LittleEndian
	coff := int(le.Uint32(stub[0x3c:])) + 4
	opt := coff + 20
	tableEnd := opt + int(le.Uint16(stub[coff+16:])) + 40*n
	changed := [][2]int{
		{coff + 2, 2},                  // NumberOfSections
		{opt + 8, 4},                   // SizeOfInitializedData
		{opt + 56, 4},                  // SizeOfImage
		{opt + 64, 4},                  // CheckSum
		{tableEnd, 40 * len(sections)}, // new section headers
	}
	masked := func(b []byte) []byte {
		c := bytes.Clone(b[:len(stub)])
		for _, r := range changed {
			clear(c[r[0] : r[0]+r[1]])
		}
		return c
	}
	if !bytes.Equal(masked(out), masked(stub)) {
		t.Errorf("result differs from the stub outside the patched header fields")
	}
	if pad := out[len(stub):alignUp(uint64(len(stub)), inOH.FileAlignment)]; bytes.ContainsFunc(pad, func(r rune) bool { return r != 0 }) {
		t.Errorf("padding after the stub is not zero")
	}

	// The new sections carry the data, aligned, disjoint, inside SizeOfImage.
	type span struct {
		name       string
		start, end uint64
		added      bool
	}
	var virt, raw []span
	var rawSum uint32
	for i, s := range f.Sections {
		virt = append(virt, span{s.Name, uint64(s.VirtualAddress), uint64(s.VirtualAddress) + uint64(max(s.VirtualSize, s.Size)), i >= n})
		if s.Size > 0 {
			raw = append(raw, span{s.Name, uint64(s.Offset), uint64(s.Offset) + uint64(s.Size), i >= n})
		}
		if i < n {
			continue
		}
		want := sections[i-n]
		if s.Name != want.Name {
			t.Errorf("section %d is %q, want %q", i, s.Name, want.Name)
		}
		if s.VirtualSize != uint32(len(want.Data)) {
			t.Errorf("section %s VirtualSize %d, want %d", s.Name, s.VirtualSize, len(want.Data))
		}
		if s.Characteristics != pe.IMAGE_SCN_CNT_INITIALIZED_DATA|pe.IMAGE_SCN_MEM_READ {
			t.Errorf("section %s characteristics %#x", s.Name, s.Characteristics)
		}
		if s.VirtualAddress%oh.SectionAlignment != 0 || s.Offset%oh.FileAlignment != 0 || s.Size%oh.FileAlignment != 0 {
			t.Errorf("section %s misaligned: RVA %#x, offset %#x, raw size %#x", s.Name, s.VirtualAddress, s.Offset, s.Size)
		}
		if s.Offset < uint32(len(stub)) {
			t.Errorf("section %s raw data at %#x overlaps the stub file (%#x bytes)", s.Name, s.Offset, len(stub))
		}
		if s.VirtualAddress < inOH.SizeOfImage {
			t.Errorf("section %s at RVA %#x inside the stub's image (%#x)", s.Name, s.VirtualAddress, inOH.SizeOfImage)
		}
		data, err := s.Data()
		if err != nil {
			t.Fatalf("read section %s: %v", s.Name, err)
		}
		if !bytes.Equal(data[:s.VirtualSize], want.Data) {
			t.Errorf("section %s data differs", s.Name)
		}
		if bytes.ContainsFunc(data[s.VirtualSize:], func(r rune) bool { return r != 0 }) {
			t.Errorf("section %s padding is not zero", s.Name)
		}
		if prev := f.Sections[i-1]; uint64(s.VirtualAddress) < uint64(prev.VirtualAddress)+uint64(prev.VirtualSize) {
			// systemd-stub 252 warns about exactly this.
			t.Errorf("section %s starts below the end of %s, listed before it", s.Name, prev.Name)
		}
		rawSum += s.Size
	}
	for _, spans := range [][]span{virt, raw} {
		for i, a := range spans {
			for _, b := range spans[i+1:] {
				// The x86_64 stub's own .sbat and .sdmagic overlap by raw size; not ours to judge.
				if (a.added || b.added) && a.start < b.end && b.start < a.end {
					t.Errorf("sections %s [%#x,%#x) and %s [%#x,%#x) overlap", a.name, a.start, a.end, b.name, b.start, b.end)
				}
			}
		}
	}
	for _, v := range virt {
		if v.end > uint64(oh.SizeOfImage) {
			t.Errorf("section %s ends at %#x, past SizeOfImage %#x", v.name, v.end, oh.SizeOfImage)
		}
	}
	if oh.SizeOfImage%oh.SectionAlignment != 0 {
		t.Errorf("SizeOfImage %#x not a multiple of SectionAlignment %#x", oh.SizeOfImage, oh.SectionAlignment)
	}
	if oh.SizeOfInitializedData != inOH.SizeOfInitializedData+rawSum {
		t.Errorf("SizeOfInitializedData %#x, want %#x", oh.SizeOfInitializedData, inOH.SizeOfInitializedData+rawSum)
	}
	if want := refChecksum(out); oh.CheckSum != want {
		t.Errorf("CheckSum %#x, want %#x", oh.CheckSum, want)
	}
	if uint64(len(out))%uint64(oh.FileAlignment) != 0 {
		t.Errorf("result length %#x not file aligned", len(out))
	}

	again, err := Assemble(stub, sections)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("second Assemble differs (err %v): output is not deterministic", err)
	}
}

func TestAssembleErrors(t *testing.T) {
	good := []Section{{".linux", []byte("kernel")}}
	noise := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	patch := func(s synthStub, f func(b []byte)) func(*testing.T) []byte {
		return func(t *testing.T) []byte { b := s.build(t); f(b); return b }
	}
	built := func(s synthStub) func(*testing.T) []byte { return patch(s, func([]byte) {}) }
	raw := func(b []byte) func(*testing.T) []byte { return func(*testing.T) []byte { return b } }
	opt := synthPEOffset + 4 + 20

	tests := []struct {
		name     string
		stub     func(*testing.T) []byte
		sections []Section
		want     error
		text     string
	}{
		{"name too long", built(baseStub()), []Section{{".initrd12", []byte("x")}}, ErrSection, "longer than 8"},
		{"empty name", built(baseStub()), []Section{{"", []byte("x")}}, ErrSection, "empty name"},
		{"string table name", built(baseStub()), []Section{{"/4", []byte("x")}}, ErrSection, "'/'"},
		{"NUL in name", built(baseStub()), []Section{{".a\x00b", []byte("x")}}, ErrSection, "NUL"},
		{"empty data", built(baseStub()), []Section{{".initrd", nil}}, ErrSection, "no data"},
		{"duplicate", built(baseStub()), []Section{{".linux", []byte("a")}, {".linux", []byte("b")}}, ErrSection, "already present"},
		{"name in stub", built(baseStub()), []Section{{".data", []byte("a")}}, ErrSection, "already present"},
		{
			"no header room",
			built(func() synthStub { s := baseStub(); s.sizeOfHdrs = 0x2b0; return s }()),
			append(ukiSections([]byte("k")), Section{".splash", []byte("bmp")}),
			ErrNoRoom, "header space",
		},
		{"directory in slack", built(func() synthStub { s := baseStub(); s.dirInSlack = true; return s }()), good, ErrNoRoom, "data directory 6"},
		{"signed stub", built(func() synthStub { s := baseStub(); s.certSize = 0x100; return s }()), good, ErrUnsupported, "certificate table"},
		{"PE32", built(func() synthStub { s := baseStub(); s.magic = 0x10b; return s }()), good, ErrUnsupported, "PE32 "},
		{"unknown magic", built(func() synthStub { s := baseStub(); s.magic = 0x107; return s }()), good, ErrNotPE, "magic"},
		{"bad file alignment", built(func() synthStub { s := baseStub(); s.fileAlign = 0x300; return s }()), good, ErrNotPE, "powers of two"},
		{"empty input", raw(nil), good, ErrNotPE, "MZ"},
		{"garbage", raw(noise), good, ErrNotPE, ""},
		{"MZ only", raw(append([]byte("MZ"), make([]byte, 0x3e)...)), good, ErrNotPE, "PE signature"},
		{"PE offset past end", patch(baseStub(), func(b []byte) { binary.LittleEndian.PutUint32(b[0x3c:], 0xfffffff0) }), good, ErrNotPE, "beyond end"},
		{"truncated optional header", func(t *testing.T) []byte { return baseStub().build(t)[:opt+100] }, good, ErrNotPE, "truncated"},
		{"section past end of file", func(t *testing.T) []byte { b := baseStub().build(t); return b[:len(b)-0x200] }, good, ErrNotPE, "past end of file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := tt.stub(t)
			_, err := Assemble(stub, tt.sections)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Assemble: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Assemble error = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Assemble error %q does not mention %q", err, tt.text)
			}
		})
	}
}

// TestAssembleNoRoomBeforeFirstSection checks that room ends at the first section's raw data
// even when SizeOfHeaders claims more.
func TestAssembleNoRoomBeforeFirstSection(t *testing.T) {
	s := baseStub()
	s.sizeOfHdrs = 0x200
	stub := s.build(t)
	binary.LittleEndian.PutUint32(stub[synthPEOffset+4+20+60:], 0x1000)
	// Table at 0x188, two stub headers end at 0x1d8: room for one more below 0x200, not two.
	if _, err := Assemble(stub, []Section{{".linux", []byte("k")}}); err != nil {
		t.Fatalf("Assemble one section: %v", err)
	}
	if _, err := Assemble(stub, []Section{{".linux", []byte("k")}, {".initrd", []byte("i")}}); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Assemble error = %v, want %v", err, ErrNoRoom)
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0x40 + 0x58, 0x1001, 0x2000, 0x12345} {
		b := baseStub().build(t)
		b = append(b, make([]byte, n)...)
		for i := len(b) - n; i < len(b); i++ {
			b[i] = byte(r.Uint32())
		}
		if n%2 == 1 && len(b)%2 == 0 {
			b = b[:len(b)-1]
		}
		c := bytes.Clone(b)
		clear(c[synthPEOffset+4+20+64:][:4])
		if got, want := checksum(c), refChecksum(b); got != want {
			t.Errorf("checksum of %d bytes = %#x, reference %#x", len(b), got, want)
		}
	}
}

// TestAssembleRealStubs builds UKIs from Debian bookworm's systemd-stub 252 and kernels, fetched
// into ingot's cache as the image build does.
func TestAssembleRealStubs(t *testing.T) {
	for _, tc := range []struct {
		arch, stub string
		machine    uint16
		// Whether the stub's linker set its PE checksum: bookworm's x86-64 stub has one (0x1aa6c
		// in 252.39), its aarch64 stub leaves the field 0.
		checksummed bool
	}{
		{"amd64", "linuxx64.efi.stub", pe.IMAGE_FILE_MACHINE_AMD64, true},
		{"arm64", "linuxaa64.efi.stub", pe.IMAGE_FILE_MACHINE_ARM64, false},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			bootRoot, kernelRoot := fetchReal(t, tc.arch)
			stub, err := os.ReadFile(filepath.Join(bootRoot, "usr/lib/systemd/boot/efi", tc.stub))
			if err != nil {
				t.Fatal(err)
			}
			kernels, _ := filepath.Glob(filepath.Join(kernelRoot, "boot/vmlinuz-*"))
			if len(kernels) != 1 {
				t.Fatalf("kernel package %s holds %d boot/vmlinuz-*", kernelRoot, len(kernels))
			}
			kernel, err := os.ReadFile(kernels[0])
			if err != nil {
				t.Fatal(err)
			}

			// The stub's own checksum, where its linker set one, validates our algorithm.
			sum := binary.LittleEndian.Uint32(stub[int(binary.LittleEndian.Uint32(stub[0x3c:]))+4+20+64:])
			if tc.checksummed && sum == 0 {
				t.Fatalf("%s has no PE checksum: nothing here validates checksum() against a linker's", tc.stub)
			}
			if c := bytes.Clone(stub); tc.checksummed {
				clear(c[int(binary.LittleEndian.Uint32(stub[0x3c:]))+4+20+64:][:4])
				if got := checksum(c); got != sum {
					t.Errorf("checksum(stub) = %#x, stub header says %#x", got, sum)
				}
			}

			sections := ukiSections(kernel)
			sections[2].Data = []byte(strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-"))
			out, err := Assemble(stub, sections)
			if err != nil {
				t.Fatalf("Assemble: %v", err)
			}
			verify(t, stub, out, sections)

			f, err := pe.NewFile(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if f.Machine != tc.machine {
				t.Errorf("machine %#x, want %#x", f.Machine, tc.machine)
			}
			linux, err := f.Section(".linux").Data()
			if err != nil {
				t.Fatal(err)
			}
			k, err := pe.NewFile(bytes.NewReader(linux[:len(kernel)]))
			if err != nil {
				t.Fatalf("embedded .linux is not a PE the stub can LoadImage: %v", err)
			}
			if k.Machine != tc.machine {
				t.Errorf("embedded kernel machine %#x, want %#x", k.Machine, tc.machine)
			}
			if testing.Verbose() {
				for _, s := range f.Sections {
					t.Logf("%-8s rva %#08x vsize %#08x raw %#08x+%#x", s.Name, s.VirtualAddress, s.VirtualSize, s.Offset, s.Size)
				}
			}
		})
	}
}

// fetchReal fetches and unpacks Debian's systemd-boot-efi and cloud kernel for arch.
func fetchReal(t *testing.T, arch string) (bootRoot, kernelRoot string) {
	t.Helper()
	testgate.Short(t, "Debian's systemd stub and kernel")
	ctx := context.Background()
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: arch}
	p, err := f.Fetch(ctx, "systemd-boot-efi")
	if err != nil {
		testgate.Skip(t, "cannot fetch systemd-boot-efi: "+err.Error())
	}
	if bootRoot, err = f.Unpack(ctx, p); err != nil {
		t.Fatal(err)
	}
	k, err := f.FetchFollowing(ctx, "linux-image-cloud-"+arch, "linux-image-")
	if err != nil {
		testgate.Skip(t, "cannot fetch the Debian kernel: "+err.Error())
	}
	if kernelRoot, err = f.Unpack(ctx, k); err != nil {
		t.Fatal(err)
	}
	return bootRoot, kernelRoot
}
