// Package cachedir names ingot's download and build cache: kernels, firmware, Debian packages,
// the pinned third-party tools and the test images live there, outside the repository and never
// committed. It is its own package so that tests and the image builder agree on the place without
// one importing the other.
package cachedir

import (
	"os"
	"path/filepath"
)

// Default is $XDG_CACHE_HOME/ingot, or ~/.cache/ingot.
func Default() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "ingot")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "ingot-cache")
	}
	return filepath.Join(home, ".cache", "ingot")
}
