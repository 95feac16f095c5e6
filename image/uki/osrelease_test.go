package uki

import (
	"strings"
	"testing"
)

func TestOSRelease(t *testing.T) {
	tests := []struct {
		name   string
		fields map[string]string
		want   string
	}{
		{"empty", nil, ""},
		{
			"sorted, identifiers bare, text quoted",
			map[string]string{"VERSION_ID": "0.3.1", "NAME": "ingot", "ID": "ingot", "PRETTY_NAME": "ingot 0.3.1 (arm64)"},
			"ID=ingot\nNAME=\"ingot\"\nPRETTY_NAME=\"ingot 0.3.1 (arm64)\"\nVERSION_ID=0.3.1\n",
		},
		{"identifier with uppercase is quoted", map[string]string{"ID": "Ingot"}, "ID=\"Ingot\"\n"},
		{"identifier with space is quoted", map[string]string{"ID_LIKE": "debian ubuntu"}, "ID_LIKE=\"debian ubuntu\"\n"},
		{"empty value", map[string]string{"VARIANT_ID": ""}, "VARIANT_ID=\"\"\n"},
		{
			"shell specials escaped",
			map[string]string{"NAME": `a "b" \c $d ` + "`e`'f'"},
			`NAME="a \"b\" \\c \$d ` + "\\`e\\`'f'\"\n",
		},
		{"newline becomes space", map[string]string{"BUILD_ID": "a\nb\tc"}, "BUILD_ID=\"a b c\"\n"},
		{"unicode kept", map[string]string{"NAME": "ingöt"}, "NAME=\"ingöt\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(OSRelease(tt.fields)); got != tt.want {
				t.Errorf("OSRelease = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOSReleaseBadKeyPanics(t *testing.T) {
	for _, k := range []string{"", "1ID", "PRETTY-NAME", "A=B", "X Y", "NAME\n"} {
		t.Run(k, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(r.(string), "invalid os-release key") {
					t.Errorf("OSRelease with key %q: recover() = %v, want invalid-key panic", k, r)
				}
			}()
			OSRelease(map[string]string{k: "v"})
		})
	}
}
