package kernel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fakeELF builds a minimal relocatable ELF64 with a .modinfo section holding modinfo.
func fakeELF(t *testing.T, modinfo string) []byte {
	t.Helper()
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	var b bytes.Buffer
	hdr := make([]byte, 64)
	copy(hdr, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le := binary.LittleEndian
	le.PutUint16(hdr[16:], 1)  // ET_REL
	le.PutUint16(hdr[18:], 62) // x86-64
	le.PutUint32(hdr[20:], 1)
	dataOff := uint64(64)
	strOff := dataOff + uint64(len(modinfo))
	shOff := strOff + uint64(len(shstr))
	le.PutUint64(hdr[40:], shOff)
	le.PutUint16(hdr[52:], 64)
	le.PutUint16(hdr[58:], 64)
	le.PutUint16(hdr[60:], 3)
	le.PutUint16(hdr[62:], 2)
	b.Write(hdr)
	b.WriteString(modinfo)
	b.Write(shstr)
	sh := func(name uint32, typ uint32, off, size uint64) {
		s := make([]byte, 64)
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], off)
		le.PutUint64(s[32:], size)
		le.PutUint64(s[48:], 1)
		b.Write(s)
	}
	sh(0, 0, 0, 0)
	sh(1, 1, dataOff, uint64(len(modinfo)))
	sh(10, 3, strOff, uint64(len(shstr)))
	return b.Bytes()
}
