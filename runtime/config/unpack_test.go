package config

import (
	"reflect"
	"strings"
	"testing"

	"ingot.dev/ingot/runtime/images/archive"
)

// The unpack limits live in ingot's own plugin table, the same in both layouts; containerd
// ignores the table of a plugin it does not have.
func TestUnpackLimits(t *testing.T) {
	if got, want := Default().Unpack, (Unpack{MaxPathLength: 4096, MaxPathDepth: 256, MaxEntries: 1 << 20, MaxUncompressedBytes: 64 << 30}); got != want {
		t.Errorf("default limits %+v, want %+v", got, want)
	}
	const table = `[plugins."dev.ingot.v1.unpack"]
  max_path_length = 1024
  max_path_depth = 64
  max_entries = 5000
  max_uncompressed_bytes = 1073741824
`
	for _, version := range []string{"2", "3"} {
		c, ws, err := Parse("config.toml", []byte("version = "+version+"\n"+table))
		if err != nil || len(ws) != 0 {
			t.Fatalf("version %s: %v, warnings %q", version, err, warningStrings(ws))
		}
		if want := (Unpack{MaxPathLength: 1024, MaxPathDepth: 64, MaxEntries: 5000, MaxUncompressedBytes: 1 << 30}); c.Unpack != want {
			t.Errorf("version %s: %+v, want %+v", version, c.Unpack, want)
		}
	}

	// Keys not set keep their default.
	c, _, err := Parse("config.toml", []byte("version = 3\n[plugins.\"dev.ingot.v1.unpack\"]\n  max_entries = 7\n"))
	if want := (Unpack{MaxPathLength: 4096, MaxPathDepth: 256, MaxEntries: 7, MaxUncompressedBytes: 64 << 30}); err != nil || c.Unpack != want {
		t.Errorf("one key set: %+v, %v; want %+v", c.Unpack, err, want)
	}

	const head = "version = 3\n[plugins.\"dev.ingot.v1.unpack\"]\n"
	for _, tc := range []struct{ doc, want string }{
		{head + "  max_path_depth = 0\n", `config.toml:3: plugins."dev.ingot.v1.unpack".max_path_depth: 0 is not positive`},
		{head + "  max_entries = -1\n", `config.toml:3: plugins."dev.ingot.v1.unpack".max_entries: -1 is not positive`},
		{head + "  max_uncompressed_bytes = \"64GiB\"\n", `config.toml:3: plugins."dev.ingot.v1.unpack".max_uncompressed_bytes: want an integer, got string`},
	} {
		if _, _, err := Parse("config.toml", []byte(tc.doc)); err == nil || err.Error() != tc.want {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
	_, ws, err := Parse("config.toml", []byte(head+"  max_depth = 3\n"))
	if want := []string{`config.toml:3: plugins."dev.ingot.v1.unpack".max_depth: unknown key; ignored`}; err != nil || !reflect.DeepEqual(warningStrings(ws), want) {
		t.Errorf("unknown key: %v, %q; want %q", err, strings.Join(warningStrings(ws), "\n"), want)
	}
}

// The node's defaults are the unpacker's own, so a config.toml without the table and a store opened
// without limits behave the same.
func TestUnpackDefaultsMatchArchive(t *testing.T) {
	got := Default().Unpack
	want := archive.Limits{}.WithDefaults()
	if got.MaxPathLength != want.MaxPathLength || got.MaxPathDepth != want.MaxPathDepth ||
		int64(got.MaxEntries) != want.MaxEntries || int64(got.MaxUncompressedBytes) != want.MaxBytes {
		t.Errorf("config.toml defaults %+v, archive defaults %+v", got, want)
	}
}
