package vmtest

import (
	"path/filepath"
	"testing"

	"ingot.dev/ingot/internal/testgate"
)

// TestReproducible builds the same profile twice per architecture into different directories and
// requires every output to have the same sha256.
func TestReproducible(t *testing.T) {
	testgate.Short(t, "two full image builds")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			dir := t.TempDir()
			a := Build(t, "dev", archName, filepath.Join(dir, "a"))
			b := Build(t, "dev", archName, filepath.Join(dir, "b"))
			if len(a.Outputs) != 4 || len(a.Outputs) != len(b.Outputs) {
				t.Fatalf("outputs: %d vs %d", len(a.Outputs), len(b.Outputs))
			}
			for i := range a.Outputs {
				if a.Outputs[i] != b.Outputs[i] {
					t.Errorf("%s differs between builds: %+v vs %+v", a.Outputs[i].Name, a.Outputs[i], b.Outputs[i])
				} else {
					t.Logf("%s: %d bytes, sha256 %s (identical)", a.Outputs[i].Name, a.Outputs[i].Size, a.Outputs[i].SHA256)
				}
			}
		})
	}
}
