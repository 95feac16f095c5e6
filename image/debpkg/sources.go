package debpkg

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// FirmwareComponent is the Debian archive component holding firmware packages (firmware-realtek,
// firmware-misc-nonfree, …) since bookworm. Hosts often list only main.
const FirmwareComponent = "non-free-firmware"

// writeSources writes the apt sources the private state uses, under dst: the host's (from etc,
// normally /etc/apt), with FirmwareComponent added to every entry of a Debian archive, so a
// profile's firmware packages can be fetched from a host that lists only main. It returns a digest
// of what it wrote: lists fetched from other sources must be refreshed.
func writeSources(etc, dst string) (string, error) {
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dst, "sources.list.d"), 0o755); err != nil {
		return "", err
	}
	h := sha256.New()
	write := func(rel string, data []byte) error {
		fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
		h.Write(data)
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	}
	list := ""
	if b, err := os.ReadFile(filepath.Join(etc, "sources.list")); err == nil {
		list = oneLineSources(string(b))
	}
	if err := write("sources.list", []byte(list)); err != nil {
		return "", err
	}
	parts, _ := filepath.Glob(filepath.Join(etc, "sources.list.d", "*"))
	sort.Strings(parts)
	for _, p := range parts {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var out string
		switch {
		case strings.HasSuffix(p, ".list"):
			out = oneLineSources(string(b))
		case strings.HasSuffix(p, ".sources"):
			out = deb822Sources(string(b))
		default:
			continue
		}
		if err := write(filepath.Join("sources.list.d", filepath.Base(p)), []byte(out)); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// debianArchive reports whether an apt URI is one of Debian's archives (deb.debian.org/debian,
// a mirror's /debian, /debian-security), which carry FirmwareComponent.
func debianArchive(uri string) bool {
	return strings.Contains(uri, "/debian") && !strings.Contains(uri, "debian-ports")
}

// oneLineSources adds FirmwareComponent to each "deb URI suite components…" line of a Debian
// archive.
func oneLineSources(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] != "deb" {
			continue
		}
		uri := 1
		if strings.HasPrefix(f[1], "[") { // options: [arch=… signed-by=…]
			for uri < len(f) && !strings.HasSuffix(f[uri], "]") {
				uri++
			}
			uri++
		}
		// f[uri] is the URI, f[uri+1] the suite, the rest components.
		if uri+2 < len(f) && debianArchive(f[uri]) && !slices.Contains(f[uri+2:], FirmwareComponent) {
			lines[i] = strings.TrimRight(l, " \t") + " " + FirmwareComponent
		}
	}
	return strings.Join(lines, "\n")
}

// deb822Sources adds FirmwareComponent to the Components of each stanza of a Debian archive.
func deb822Sources(s string) string {
	stanzas := strings.Split(s, "\n\n")
	for i, st := range stanzas {
		lines := strings.Split(st, "\n")
		debian, comp := false, -1
		for j, l := range lines {
			k, v, ok := strings.Cut(l, ":")
			if !ok || strings.HasPrefix(l, "#") {
				continue
			}
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "uris":
				for _, u := range strings.Fields(v) {
					debian = debian || debianArchive(u)
				}
			case "components":
				comp = j
			}
		}
		if debian && comp >= 0 && !slices.Contains(strings.Fields(lines[comp]), FirmwareComponent) {
			lines[comp] = strings.TrimRight(lines[comp], " \t") + " " + FirmwareComponent
		}
		stanzas[i] = strings.Join(lines, "\n")
	}
	return strings.Join(stanzas, "\n\n")
}
