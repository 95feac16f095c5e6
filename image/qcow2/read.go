package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Extent is a run of the guest disk: Length bytes at guest offset Offset, stored at host offset
// Host in the QCOW2 file, or reading as zeros when Host is -1.
type Extent struct {
	Offset, Length, Host int64
}

// Extents reads a QCOW2 image's header and tables from r and returns its virtual size and the
// extents covering it in order, adjacent ones of the same kind merged. It reads the images Write
// makes and others without compression, encryption, a backing file, external data or extended
// L2 entries; anything else is refused by name rather than misread.
func Extents(r io.ReaderAt) (int64, []Extent, error) {
	h := make([]byte, 104)
	if _, err := r.ReadAt(h, 0); err != nil {
		return 0, nil, fmt.Errorf("qcow2 header: %w", err)
	}
	be := binary.BigEndian
	if string(h[:4]) != "QFI\xfb" {
		return 0, nil, errors.New("not a QCOW2 image (bad magic)")
	}
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return 0, nil, fmt.Errorf("QCOW2 version %d is not supported", version)
	}
	if be.Uint64(h[8:]) != 0 {
		return 0, nil, errors.New("QCOW2 images with a backing file are not supported")
	}
	bits := be.Uint32(h[20:])
	if bits < 9 || bits > 21 {
		return 0, nil, fmt.Errorf("QCOW2 cluster_bits %d out of range", bits)
	}
	if be.Uint32(h[32:]) != 0 {
		return 0, nil, errors.New("encrypted QCOW2 images are not supported")
	}
	if version == 3 && be.Uint64(h[72:]) != 0 {
		return 0, nil, fmt.Errorf("QCOW2 incompatible features %#x are not supported", be.Uint64(h[72:]))
	}
	cs := int64(1) << bits
	size := int64(be.Uint64(h[24:]))
	l1Size := int64(be.Uint32(h[36:]))
	l1Off := int64(be.Uint64(h[40:]))
	perL2 := cs / 8
	if size < 0 || l1Size < (size+cs*perL2-1)/(cs*perL2) || l1Size > 1<<24 {
		return 0, nil, fmt.Errorf("QCOW2 L1 table of %d entries does not cover %d bytes", l1Size, size)
	}
	const offMask = 0x00fffffffffffe00 // bits 9-55
	l1 := make([]byte, l1Size*8)
	if _, err := r.ReadAt(l1, l1Off); err != nil {
		return 0, nil, fmt.Errorf("qcow2 L1 table: %w", err)
	}
	var out []Extent
	add := func(off, n, host int64) {
		if k := len(out) - 1; k >= 0 {
			e := &out[k]
			if e.Offset+e.Length == off && ((e.Host < 0 && host < 0) || (e.Host >= 0 && host >= 0 && e.Host+e.Length == host)) {
				e.Length += n
				return
			}
		}
		out = append(out, Extent{off, n, host})
	}
	l2 := make([]byte, cs)
	for i := range l1Size {
		base := i * cs * perL2
		if base >= size {
			break
		}
		l2Off := int64(be.Uint64(l1[i*8:]) & offMask)
		if l2Off == 0 {
			add(base, min(cs*perL2, size-base), -1)
			continue
		}
		if _, err := r.ReadAt(l2, l2Off); err != nil {
			return 0, nil, fmt.Errorf("qcow2 L2 table %d: %w", i, err)
		}
		for j := range perL2 {
			off := base + j*cs
			if off >= size {
				break
			}
			n := min(cs, size-off)
			e := be.Uint64(l2[j*8:])
			switch {
			case e&(1<<62) != 0:
				return 0, nil, fmt.Errorf("QCOW2 cluster at %d is compressed, which is not supported", off)
			case e&1 != 0 || e&offMask == 0:
				add(off, n, -1) // all zeros, or unallocated (no backing file: zeros)
			default:
				add(off, n, int64(e&offMask))
			}
		}
	}
	return size, out, nil
}
