package identity

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMachineIDCreatedOnceAndKept(t *testing.T) {
	root := t.TempDir()
	kept := filepath.Join(root, "var/lib/ingot/node/machine-id")
	etc := filepath.Join(root, "etc-machine-id")
	random := bytes.Repeat([]byte{0xab}, 16)

	id, created, err := MachineID(kept, etc, bytes.NewReader(random))
	if err != nil {
		t.Fatal(err)
	}
	// 0xab with the UUID v4 version and variant bits set.
	if want := "abababababab4bab abababababababab"; id != strings.ReplaceAll(want, " ", "") || !created {
		t.Errorf("first boot: id %q created %v, want %q true", id, created, want)
	}
	for _, p := range []string{kept, etc} {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(p)
		if string(data) != id+"\n" || st.Mode() != 0o444 {
			t.Errorf("%s = %q mode %v, want %q 0444", p, data, st.Mode(), id+"\n")
		}
	}
	if st, _ := os.Stat(filepath.Dir(kept)); st.Mode().Perm() != 0o700 {
		t.Errorf("kept dir mode %v, want 0700", st.Mode())
	}

	// Second boot: /etc is fresh (tmpfs root), the kept id comes back; randomness is not used.
	os.Remove(etc)
	id2, created, err := MachineID(kept, etc, bytes.NewReader(nil))
	if err != nil || id2 != id || created {
		t.Errorf("second boot: id %q created %v err %v, want %q false", id2, created, err, id)
	}
	if data, _ := os.ReadFile(etc); string(data) != id+"\n" {
		t.Errorf("/etc/machine-id on second boot = %q", data)
	}

	// A torn kept file is replaced by a new identity rather than copied.
	os.Chmod(kept, 0o644)
	os.WriteFile(kept, []byte("abc"), 0o644)
	id3, created, err := MachineID(kept, etc, bytes.NewReader(bytes.Repeat([]byte{0x01}, 16)))
	if err != nil || !created || id3 != "01010101010141018101010101010101" {
		t.Errorf("torn kept id: got %q created %v err %v", id3, created, err)
	}
}

func TestValidMachineID(t *testing.T) {
	for s, want := range map[string]bool{
		"0123456789abcdef0123456789abcdef":  true,
		"0123456789ABCDEF0123456789ABCDEF":  false,
		"0123456789abcdef0123456789abcde":   false,
		"00000000000000000000000000000000":  false,
		"0123456789abcdef0123456789abcdeg":  false,
		"0123456789abcdef0123456789abcdef0": false,
	} {
		if ValidMachineID(s) != want {
			t.Errorf("ValidMachineID(%q) = %v", s, !want)
		}
	}
}

func TestWriteHostFiles(t *testing.T) {
	etc := t.TempDir()
	if err := WriteHostFiles(etc, "web-1"); err != nil {
		t.Fatal(err)
	}
	hosts, _ := os.ReadFile(filepath.Join(etc, "hosts"))
	want := "# written by ingot-node at boot\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tweb-1\n"
	if string(hosts) != want {
		t.Errorf("/etc/hosts = %q, want %q", hosts, want)
	}
	name, _ := os.ReadFile(filepath.Join(etc, "hostname"))
	st, _ := os.Stat(filepath.Join(etc, "hosts"))
	if string(name) != "web-1\n" || st.Mode() != 0o644 {
		t.Errorf("/etc/hostname = %q, hosts mode %v", name, st.Mode())
	}
}
