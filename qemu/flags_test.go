package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ingot.dev/ingot/image/manifest"
)

// netdev returns the value of -netdev in args.
func netdev(t *testing.T, args []string) string {
	t.Helper()
	i := slices.Index(args, "-netdev")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no -netdev in %q", args)
	}
	return args[i+1]
}

func TestArgsNetwork(t *testing.T) {
	fwd := func(s string) string {
		r, err := ParseForward(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		cfg     Config
		netdev  string
		wantErr string
	}{
		{name: "default is restricted", netdev: "user,id=net0,restrict=on"},
		{name: "restricted", cfg: Config{Net: NetRestricted}, netdev: "user,id=net0,restrict=on"},
		{name: "user NAT", cfg: Config{Net: NetUser}, netdev: "user,id=net0"},
		{name: "forwards on loopback",
			cfg:    Config{HostFwd: []string{fwd("6443:6443"), fwd("2222:22")}},
			netdev: "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:6443-:6443,hostfwd=tcp:127.0.0.1:2222-:22"},
		{name: "forward with user NAT", cfg: Config{Net: NetUser, HostFwd: []string{fwd("8080:80")}},
			netdev: "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"},
		{name: "unknown network", cfg: Config{Net: "bridge"}, wantErr: `qemu: unknown network "bridge" (want restricted or user)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.Image, c.RunDir = "/img", t.TempDir()
			args, err := c.Args(&manifest.Manifest{Arch: "amd64", Cmdline: "console=ttyS0"})
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("Args error = %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := netdev(t, args); got != tc.netdev {
				t.Fatalf("-netdev %s; want %s", got, tc.netdev)
			}
		})
	}
}

func TestParseForward(t *testing.T) {
	for in, want := range map[string]string{
		"6443:6443": "tcp:127.0.0.1:6443-:6443",
		"2222:22":   "tcp:127.0.0.1:2222-:22",
		"0:22":      `--forward "0:22": host port 0 is not a port (1-65535)`,
		"22":        `--forward "22": want HOSTPORT:GUESTPORT`,
		"a:22":      `--forward "a:22": host port a is not a port (1-65535)`,
		"22:70000":  `--forward "22:70000": guest port 70000 is not a port (1-65535)`,
		"1.2.3.4:8": `--forward "1.2.3.4:8": host port 1.2.3.4 is not a port (1-65535)`,
	} {
		got, err := ParseForward(in)
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("ParseForward(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"2G": 2 << 30, "2GiB": 2 << 30, "512M": 512 << 20, "512MiB": 512 << 20, "1T": 1 << 40,
		"1048576": 1 << 20, "1.5G": 3 << 29,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "2X", "-1G", "0", "2 G"} {
		if _, err := ParseSize(in); err == nil || !strings.Contains(err.Error(), `size "`+in+`"`) {
			t.Errorf("ParseSize(%q) error = %v; want one naming the size", in, err)
		}
	}
}

func TestWorkingDisk(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "run", "disk.raw")
	os.MkdirAll(filepath.Dir(dst), 0o755)
	if err := os.WriteFile(src, append([]byte("image"), make([]byte, 4<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		st, err := os.Stat(dst)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	srcSize := int64(5 + 4<<20)

	// A new copy grows to the size asked for, sparsely.
	if err := WorkingDisk(src, dst, false, 1<<30); err != nil {
		t.Fatal(err)
	}
	if size() != 1<<30 {
		t.Fatalf("new copy is %d bytes; want %d", size(), 1<<30)
	}
	// An existing copy is kept as it is: its node may have formatted its state already.
	os.WriteFile(dst+".mark", nil, 0o644)
	f, _ := os.OpenFile(dst, os.O_RDWR, 0)
	f.WriteAt([]byte("node state"), 100)
	f.Close()
	if err := WorkingDisk(src, dst, false, 2<<30); err != nil {
		t.Fatal(err)
	}
	if size() != 1<<30 {
		t.Fatalf("existing copy resized to %d bytes", size())
	}
	// --fresh starts over, at the image's own size without --disk-size.
	if err := WorkingDisk(src, dst, true, 0); err != nil {
		t.Fatal(err)
	}
	if size() != srcSize {
		t.Fatalf("fresh copy is %d bytes; want the image's %d", size(), srcSize)
	}
	// A size below the image's is refused: the disk only grows.
	err := WorkingDisk(src, dst, true, 1<<20)
	if want := "--disk-size 1048576 bytes is smaller than the image's disk " + src + " (4194309 bytes)"; err == nil || err.Error() != want {
		t.Fatalf("shrinking: %v; want %q", err, want)
	}
}
