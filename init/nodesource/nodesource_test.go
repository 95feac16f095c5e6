package nodesource

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"ingot.dev/ingot/image/configdrive"
)

// fatImage writes a FAT32 volume labelled label holding files, as a config drive tool would.
func fatImage(t *testing.T, path, label string, files map[string]string) {
	t.Helper()
	d, err := diskfs.Create(path, 40<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat32, VolumeLabel: label})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

func isoImage(t *testing.T, path, label string, files map[string]string) {
	t.Helper()
	d, err := diskfs.Create(path, 4<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.LogicalBlocksize = 2048
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		f, err := fs.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(data))
		f.Close()
	}
	if err := fs.(*iso9660.FileSystem).Finalize(iso9660.FinalizeOptions{VolumeIdentifier: label}); err != nil {
		t.Fatal(err)
	}
}

// fat16Image hand-writes a FAT16 boot sector and root directory, the layout mkfs.vfat gives a
// small volume: bootLabel in the boot sector, dirLabel (if any) as the root directory's entry.
func fat16Image(t *testing.T, path, bootLabel, dirLabel string) {
	t.Helper()
	const bps, reserved, fats, spf, rootEntries = 512, 4, 2, 8, 512
	img := make([]byte, 64<<10)
	le := binary.LittleEndian
	le.PutUint16(img[0x0b:], bps)
	img[0x0d] = 4
	le.PutUint16(img[0x0e:], reserved)
	img[0x10] = fats
	le.PutUint16(img[0x11:], rootEntries)
	le.PutUint16(img[0x16:], spf)
	img[0x26] = 0x29
	copy(img[0x2b:], pad(bootLabel))
	copy(img[0x36:], "FAT16   ")
	img[510], img[511] = 0x55, 0xaa
	root := (reserved + fats*spf) * bps
	// A long-name entry and a deleted one come first: neither is the label.
	copy(img[root:], "Axxxxxxxxxx")
	img[root+11] = 0x0f
	img[root+32] = 0xe5
	img[root+32+11] = 0x08
	if dirLabel != "" {
		copy(img[root+64:], pad(dirLabel))
		img[root+64+11] = 0x08
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pad(s string) string { return (s + "           ")[:11] }

func TestProbeLabel(t *testing.T) {
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	fatImage(t, path("fat32"), "INGOT-CONFIG", nil)
	isoImage(t, path("iso"), "cidata", map[string]string{"meta-data": "x"})
	fat16Image(t, path("fat16-boot"), "INGOT-CONFIG", "")
	fat16Image(t, path("fat16-dir"), "NO NAME", "CIDATA")
	fat16Image(t, path("fat16-none"), "NO NAME", "")
	os.WriteFile(path("zeros"), make([]byte, 64<<10), 0o644)
	os.WriteFile(path("short"), []byte("x"), 0o644)

	for _, tc := range []struct {
		name   string
		want   Volume
		wantOK bool
	}{
		// FAT labels are 11 characters: the formatter truncates INGOT-CONFIG.
		{"fat32", Volume{Dev: path("fat32"), FSType: FSVfat, Label: "INGOT-CONFI"}, true},
		{"iso", Volume{Dev: path("iso"), FSType: FSISO9660, Label: "cidata"}, true},
		{"fat16-boot", Volume{Dev: path("fat16-boot"), FSType: FSVfat, Label: "INGOT-CONFI"}, true},
		// The root directory's entry is the label when both exist.
		{"fat16-dir", Volume{Dev: path("fat16-dir"), FSType: FSVfat, Label: "CIDATA"}, true},
		{"fat16-none", Volume{Dev: path("fat16-none"), FSType: FSVfat, Label: ""}, true},
		{"zeros", Volume{}, false},
		{"short", Volume{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := ProbeLabel(path(tc.name))
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("ProbeLabel = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
	if _, _, err := ProbeLabel(path("missing")); err == nil || !strings.Contains(err.Error(), "probe "+path("missing")) {
		t.Errorf("missing device: err = %v, want one naming it", err)
	}
}

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		cmdline string
		want    []Source
		err     string
	}{
		{"console=ttyS0 loglevel=4", []Source{FwCfg, Drive, Cidata}, ""},
		{"console=ttyS0 ingot.node=drive", []Source{Drive}, ""},
		{"ingot.node=fwcfg ingot.node=cidata", []Source{Cidata}, ""},
		{"ingot.node=none", nil, ""},
		{"ingot.node=usb", []Source{FwCfg, Drive, Cidata}, "ingot.node=usb: unknown source (want fwcfg, drive, cidata or none)"},
	} {
		got, err := Order(tc.cmdline)
		if !reflect.DeepEqual(got, tc.want) || (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err {
			t.Errorf("Order(%q) = %v, %v; want %v, %q", tc.cmdline, got, err, tc.want, tc.err)
		}
	}
}

func TestParseMetaData(t *testing.T) {
	data := "# NoCloud\ninstance-id: iid-node-7 # comment\nlocal-hostname: 'web-1'\nnetwork:\n  local-hostname: nested\npublic-keys: []\n"
	want := MetaData{LocalHostname: "web-1", InstanceID: "iid-node-7"}
	if got := ParseMetaData([]byte(data)); got != want {
		t.Errorf("ParseMetaData = %+v, want %+v", got, want)
	}
}

// fakeNode is a sysfs and /dev in a temp dir: each volume is an image file under dev, listed in
// sysfs/class/block with a uevent naming it.
type fakeNode struct {
	t              *testing.T
	sys, dev, root string
	files          map[string]map[string]string // device path -> files on the volume
}

func newFakeNode(t *testing.T) *fakeNode {
	root := t.TempDir()
	n := &fakeNode{t: t, root: root, sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev"), files: map[string]map[string]string{}}
	os.MkdirAll(filepath.Join(n.sys, "class/block"), 0o755)
	os.MkdirAll(n.dev, 0o755)
	return n
}

func (n *fakeNode) block(name string, write func(path string)) {
	os.MkdirAll(filepath.Join(n.sys, "class/block", name), 0o755)
	os.WriteFile(filepath.Join(n.sys, "class/block", name, "uevent"), []byte("MAJOR=254\nDEVNAME="+name+"\nDEVTYPE=disk\n"), 0o644)
	write(filepath.Join(n.dev, name))
}

func (n *fakeNode) fwcfg(data string) {
	dir := filepath.Join(n.sys, "firmware/qemu_fw_cfg/by_name", FwCfgName)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "raw"), []byte(data), 0o444)
}

// reader reads volumes through the files the test recorded for each image, since mounting needs
// root; which device is read, and with which filesystem type, is what is under test.
func (n *fakeNode) reader(mounted *[]string) Reader {
	return Reader{Sys: n.sys, Dev: n.dev, ReadVolume: func(ctx context.Context, v Volume, names ...string) (map[string][]byte, error) {
		*mounted = append(*mounted, v.String())
		out := map[string][]byte{}
		for _, name := range names {
			if d, ok := n.files[v.Dev][name]; ok {
				out[name] = []byte(d)
			}
		}
		return out, nil
	}}
}

func (n *fakeNode) volume(name, label string, iso bool, files map[string]string) {
	n.block(name, func(p string) {
		if iso {
			isoImage(n.t, p, label, files)
		} else {
			fatImage(n.t, p, label, files)
		}
		n.files[p] = files
	})
}

func TestReadOrder(t *testing.T) {
	n := newFakeNode(t)
	n.block("vda", func(p string) { os.WriteFile(p, make([]byte, 64<<10), 0o644) }) // the OS disk
	n.volume("vdc", "cidata", true, map[string]string{"meta-data": "local-hostname: from-cidata\ninstance-id: i-1\n"})
	n.volume("vdb", "INGOT-CONFIG", false, map[string]string{"node.toml": "hostname = \"from-drive\"\n"})
	ctx := context.Background()

	var mounted []string
	r := n.reader(&mounted)
	c, err := r.Read(ctx, DefaultOrder())
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Source: Drive, Name: filepath.Join(n.dev, "vdb") + ":node.toml", TOML: []byte("hostname = \"from-drive\"\n")}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("drive before cidata: got %+v, want %+v", c, want)
	}
	if len(mounted) != 1 || mounted[0] != filepath.Join(n.dev, "vdb")+` (vfat "INGOT-CONFI")` {
		t.Errorf("mounted %q, want only the config drive", mounted)
	}

	c, err = r.Read(ctx, []Source{Cidata})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != Cidata || c.TOML != nil || c.Meta != (MetaData{LocalHostname: "from-cidata", InstanceID: "i-1"}) {
		t.Errorf("ingot.node=cidata: got %+v", c)
	}

	// fw_cfg, once present, wins over both volumes.
	n.fwcfg("hostname = \"from-fwcfg\"\n")
	mounted = nil
	c, err = r.Read(ctx, DefaultOrder())
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != FwCfg || c.Name != "fw_cfg:opt/ingot/node.toml" || string(c.TOML) != "hostname = \"from-fwcfg\"\n" || len(mounted) != 0 {
		t.Errorf("fw_cfg first: got %+v, mounted %q", c, mounted)
	}

	if _, err := r.Read(ctx, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("ingot.node=none: err = %v, want ErrNotFound", err)
	}
}

func TestReadMissingAndBroken(t *testing.T) {
	ctx := context.Background()
	n := newFakeNode(t)
	var mounted []string
	if _, err := n.reader(&mounted).Read(ctx, DefaultOrder()); !errors.Is(err, ErrNotFound) {
		t.Errorf("no source: err = %v, want ErrNotFound", err)
	}
	// A config drive without node.toml is present but broken: an error naming the device.
	n.volume("vdb", "INGOT-CONFIG", false, map[string]string{"other.txt": "x"})
	_, err := n.reader(&mounted).Read(ctx, DefaultOrder())
	want := "read node config from " + filepath.Join(n.dev, "vdb") + ` (vfat "INGOT-CONFI"): no node.toml on it`
	if err == nil || err.Error() != want {
		t.Errorf("drive without node.toml: err = %v, want %q", err, want)
	}
	// Too large to be a node config.
	n.fwcfg(strings.Repeat("#", MaxSize+1))
	_, err = n.reader(&mounted).Read(ctx, DefaultOrder())
	if err == nil || !strings.Contains(err.Error(), "read node config from fw_cfg opt/ingot/node.toml: read ") || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("oversized fw_cfg: err = %v", err)
	}
}

func TestKeep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var/lib/ingot/node")
	if _, err := LoadKept(dir); !errors.Is(err, ErrNotFound) {
		t.Fatalf("nothing kept: err = %v, want ErrNotFound", err)
	}
	c := Config{Source: Cidata, Name: "/dev/vdc:node.toml", TOML: []byte("hostname = \"a\"\n"), Meta: MetaData{LocalHostname: "a", InstanceID: "i-9"}}
	if err := Keep(dir, c); err != nil {
		t.Fatal(err)
	}
	c.TOML = []byte("hostname = \"b\"\n")
	if err := Keep(dir, c); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]os.FileMode{dir: os.ModeDir | 0o700, filepath.Join(dir, "node.toml"): 0o600, filepath.Join(dir, "meta-data"): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("kept dir holds %d entries, want node.toml and meta-data (no temporary files left)", len(entries))
	}
	got, err := LoadKept(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Source: Kept, Name: filepath.Join(dir, "node.toml"), TOML: []byte("hostname = \"b\"\n"), Meta: MetaData{LocalHostname: "a", InstanceID: "i-9"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadKept = %+v, want %+v", got, want)
	}
}

func TestVolumeIs(t *testing.T) {
	for _, tc := range []struct {
		v      Volume
		drive  bool
		cidata bool
	}{
		{Volume{FSType: FSISO9660, Label: "INGOT-CONFIG"}, true, false},
		{Volume{FSType: FSVfat, Label: "INGOT-CONFI"}, true, false},
		{Volume{FSType: FSISO9660, Label: "INGOT-CONFI"}, false, false}, // ISO labels are not truncated
		{Volume{FSType: FSVfat, Label: "CIDATA"}, false, true},
		{Volume{FSType: FSISO9660, Label: "cidata"}, false, true},
		{Volume{FSType: FSVfat, Label: "INGOT-ESP"}, false, false},
	} {
		if got := tc.v.Is(Drive); got != tc.drive {
			t.Errorf("%v.Is(drive) = %v", tc.v, got)
		}
		if got := tc.v.Is(Cidata); got != tc.cidata {
			t.Errorf("%v.Is(cidata) = %v", tc.v, got)
		}
	}
}

// A volume that ingot.node= names alone is waited for: disks appear after the driver probes them.
func TestReadWaitsForNamedVolume(t *testing.T) {
	n := newFakeNode(t)
	var mounted []string
	r := n.reader(&mounted)
	r.Wait = 5 * time.Second
	// The device shows up while Read looks: its image is written elsewhere, then moved into /dev
	// and announced in sysfs, as the kernel would.
	files := map[string]string{"node.toml": "hostname = \"late\"\n"}
	n.files[filepath.Join(n.dev, "vdb")] = files
	tmp := filepath.Join(t.TempDir(), "vdb")
	go func() {
		fatImage(t, tmp, "INGOT-CONFIG", files)
		os.Rename(tmp, filepath.Join(n.dev, "vdb"))
		os.MkdirAll(filepath.Join(n.sys, "class/block/vdb"), 0o755)
		os.WriteFile(filepath.Join(n.sys, "class/block/vdb/uevent"), []byte("DEVNAME=vdb\n"), 0o644)
	}()
	c, err := r.Read(context.Background(), []Source{Drive})
	if err != nil || string(c.TOML) != "hostname = \"late\"\n" {
		t.Fatalf("named drive appearing late: %+v, %v", c, err)
	}
	// Unnamed, one look: a missing source is normal and costs no wait.
	start := time.Now()
	if _, err := newFakeNode(t).reader(&mounted).Read(context.Background(), DefaultOrder()); !errors.Is(err, ErrNotFound) || time.Since(start) > time.Second {
		t.Errorf("no source: %v after %s", err, time.Since(start))
	}
}

// The drives `ingot node-config drive` writes are found: FAT12 carries INGOT-CONFI, ISO 9660 the
// whole label.
func TestProbeConfigDriveImages(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		format configdrive.Format
		want   Volume
	}{
		{configdrive.VFAT, Volume{FSType: FSVfat, Label: "INGOT-CONFI"}},
		{configdrive.ISO, Volume{FSType: FSISO9660, Label: "INGOT-CONFIG"}},
	} {
		path := filepath.Join(dir, string(tc.format))
		if err := configdrive.Write(path, tc.format, []byte("hostname = \"a\"\n"), 0); err != nil {
			t.Fatal(err)
		}
		v, ok, err := ProbeLabel(path)
		tc.want.Dev = path
		if err != nil || !ok || v != tc.want || !v.Is(Drive) {
			t.Errorf("%s drive: %v, %v, %v; want %v, a config drive", tc.format, v, ok, err, tc.want)
		}
	}
}
