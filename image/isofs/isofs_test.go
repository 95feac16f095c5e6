package isofs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/image/disk"
	"ingot.dev/ingot/image/iso"
)

// TestOpen reads files back out of an ISO by their names, as the node's installer does.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	esp := filepath.Join(dir, "esp.img")
	if _, err := disk.WriteFAT(esp, "E", 0, nil); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", 300000)
	files := map[string]string{"/disk.qcow2": big, "/install.json": `{"a":1}`}
	for i := range 40 { // enough entries that the root directory spans blocks
		files[fmt.Sprintf("/file-with-a-long-name-%02d.txt", i)] = fmt.Sprint(i)
	}
	host := map[string]string{}
	for p, data := range files {
		f := filepath.Join(dir, strings.TrimPrefix(p, "/"))
		os.WriteFile(f, []byte(data), 0o644)
		host[p] = f
	}
	out := filepath.Join(dir, "x.iso")
	if err := iso.Write(out, "INGOT", esp, host); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	for p, data := range files {
		s, err := Open(f, strings.TrimPrefix(p, "/"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(s)
		if string(got) != data {
			t.Fatalf("%s reads %d bytes, want %d", p, len(got), len(data))
		}
	}
	if _, err := Open(f, "missing"); err == nil || !strings.Contains(err.Error(), `no file "missing"`) {
		t.Fatalf("Open of a missing file: %v", err)
	}
	if _, err := Open(strings.NewReader(strings.Repeat("x", 40000)), "disk.qcow2"); err == nil {
		t.Fatal("Open of something that is not an ISO succeeded")
	}
}
