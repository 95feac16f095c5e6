// Package qcow2 writes a raw disk image as a QCOW2 (version 3) image: the format clouds,
// libvirt and OpenStack take, holding only the clusters that are not all zeros, so an image whose
// partitions are mostly empty is as small as what it holds.
//
// The file is laid out in one pass, with every table written once: the header, the L1 table, the
// refcount table and its blocks, the L2 tables, then the data clusters in disk order. There is no
// compression, backing file, snapshot or encryption; every cluster has a reference count of one.
// The format is QEMU's docs/interop/qcow2.txt.
package qcow2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const (
	clusterBits  = 16 // 64 KiB clusters, QEMU's default
	clusterSize  = 1 << clusterBits
	l2Entries    = clusterSize / 8 // 8-byte entries
	refcountBits = 16              // refcount_order 4
	rbEntries    = clusterSize * 8 / refcountBits
	headerLength = 104 // a version 3 header without the optional fields
	copied       = 1 << 63
)

// Write converts the raw image src into a QCOW2 image at dst. It writes dst's sibling first and
// renames it into place, so dst is the whole image or absent.
func Write(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	size := st.Size()
	if size <= 0 {
		return fmt.Errorf("qcow2: %s is empty", src)
	}
	data, err := dataClusters(in, size)
	if err != nil {
		return fmt.Errorf("qcow2: read %s: %w", src, err)
	}
	l := layout(size, data)

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if err := l.write(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("qcow2: write %s: %w", dst, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("qcow2: write %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("qcow2: write %s: %w", dst, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("qcow2: %w", err)
	}
	return nil
}

// dataClusters lists, in order, the guest clusters of the raw image that hold a byte other than
// zero. Holes (SEEK_DATA) are skipped without reading them.
func dataClusters(f *os.File, size int64) ([]int64, error) {
	var out []int64
	buf := make([]byte, clusterSize)
	zero := make([]byte, clusterSize)
	fd := int(f.Fd())
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, err
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		for c := start / clusterSize; c*clusterSize < min(end, size); c++ {
			n, err := f.ReadAt(buf, c*clusterSize)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			if !bytes.Equal(buf[:n], zero[:n]) && (len(out) == 0 || out[len(out)-1] != c) {
				out = append(out, c)
			}
		}
		off = (min(end, size) + clusterSize - 1) / clusterSize * clusterSize
	}
	return out, nil
}

// plan is where everything goes in the image, in host clusters.
type plan struct {
	size       int64
	data       []int64         // guest clusters with data, in order; data[i] is at dataStart+i
	l2         map[int64]int64 // L1 index -> host cluster of its L2 table
	l1Size     int64           // L1 entries
	l1Start    int64
	rtStart    int64 // refcount table
	rtClusters int64
	rbStart    int64 // refcount blocks
	rbCount    int64
	dataStart  int64
	total      int64 // clusters in the file
}

func layout(size int64, data []int64) *plan {
	p := &plan{size: size, data: data, l2: map[int64]int64{}}
	p.l1Size = (size + clusterSize*l2Entries - 1) / (clusterSize * l2Entries)
	l1Clusters := (p.l1Size*8 + clusterSize - 1) / clusterSize
	var l1Used []int64
	for _, c := range data {
		if i := c / l2Entries; len(l1Used) == 0 || l1Used[len(l1Used)-1] != i {
			l1Used = append(l1Used, i)
		}
	}
	base := 1 + l1Clusters + int64(len(l1Used)) + int64(len(data))
	// The refcount table and blocks count themselves: grow them until they cover the file.
	p.rtClusters, p.rbCount = 1, 1
	for {
		total := base + p.rtClusters + p.rbCount
		rb := (total + rbEntries - 1) / rbEntries
		rt := (rb*8 + clusterSize - 1) / clusterSize
		if rb == p.rbCount && rt == p.rtClusters {
			p.total = total
			break
		}
		p.rbCount, p.rtClusters = rb, rt
	}
	p.l1Start = 1
	p.rtStart = p.l1Start + l1Clusters
	p.rbStart = p.rtStart + p.rtClusters
	l2Start := p.rbStart + p.rbCount
	for i, idx := range l1Used {
		p.l2[idx] = l2Start + int64(i)
	}
	p.dataStart = l2Start + int64(len(l1Used))
	return p
}

func (p *plan) write(out *os.File, in *os.File) error {
	w := bufio.NewWriterSize(out, 1<<20)
	be := binary.BigEndian
	cluster := func() []byte { return make([]byte, clusterSize) }

	// Header, then the end of the (empty) list of header extensions.
	h := cluster()
	copy(h, "QFI\xfb")
	be.PutUint32(h[4:], 3)
	be.PutUint32(h[20:], clusterBits)
	be.PutUint64(h[24:], uint64(p.size))
	be.PutUint32(h[36:], uint32(p.l1Size))
	be.PutUint64(h[40:], uint64(p.l1Start*clusterSize))
	be.PutUint64(h[48:], uint64(p.rtStart*clusterSize))
	be.PutUint32(h[56:], uint32(p.rtClusters))
	be.PutUint32(h[96:], 4) // refcount_order: 16-bit refcounts
	be.PutUint32(h[100:], headerLength)
	if _, err := w.Write(h); err != nil {
		return err
	}

	l1 := make([]byte, (p.rtStart-p.l1Start)*clusterSize)
	for idx, host := range p.l2 {
		be.PutUint64(l1[idx*8:], uint64(host*clusterSize)|copied)
	}
	if _, err := w.Write(l1); err != nil {
		return err
	}

	rt := make([]byte, p.rtClusters*clusterSize)
	for i := range p.rbCount {
		be.PutUint64(rt[i*8:], uint64((p.rbStart+i)*clusterSize))
	}
	if _, err := w.Write(rt); err != nil {
		return err
	}
	rb := make([]byte, p.rbCount*clusterSize)
	for c := range p.total {
		be.PutUint16(rb[c*2:], 1)
	}
	if _, err := w.Write(rb); err != nil {
		return err
	}

	// L2 tables in L1 order, which is the order their host clusters were given: data is sorted,
	// so each table's entries are a run of it.
	for i := 0; i < len(p.data); {
		idx := p.data[i] / l2Entries
		t := cluster()
		for ; i < len(p.data) && p.data[i]/l2Entries == idx; i++ {
			c := p.data[i]
			be.PutUint64(t[(c%l2Entries)*8:], uint64((p.dataStart+int64(i))*clusterSize)|copied)
		}
		if _, err := w.Write(t); err != nil {
			return err
		}
	}

	buf := cluster()
	for _, c := range p.data {
		clear(buf)
		if _, err := in.ReadAt(buf, c*clusterSize); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return w.Flush()
}
