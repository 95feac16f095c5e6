package uki

import (
	"fmt"
	"slices"
	"strings"
)

// OSRelease renders fields as os-release(5) text for the .osrel section: one KEY=value line per
// field, keys sorted so the output is reproducible. Identifier fields (ID, VERSION_ID, …) whose
// values use only [a-z0-9._-] are written bare; all other values are double-quoted with ", \, $
// and ` backslash-escaped, as the format's shell-compatible quoting requires. The format is
// line-oriented, so control characters (newlines included) in values become spaces.
//
// systemd-boot 252 strips the quotes when it shows the entry but does not undo escapes, so values
// meant for display (PRETTY_NAME) read best without those four characters.
//
// A key that is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*) is a programming error and
// panics: writing it would produce a line every parser drops.
func OSRelease(fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if !validKey(k) {
			panic(fmt.Sprintf("uki: invalid os-release key %q", k))
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)

	var b strings.Builder
	for _, k := range keys {
		v := strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, fields[k])
		b.WriteString(k)
		b.WriteByte('=')
		if identifierKey(k) && isIdentifier(v) {
			b.WriteString(v)
		} else {
			b.WriteByte('"')
			for _, r := range v {
				if strings.ContainsRune("\"\\$`", r) {
					b.WriteByte('\\')
				}
				b.WriteRune(r)
			}
			b.WriteByte('"')
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func validKey(k string) bool {
	if k == "" || (k[0] >= '0' && k[0] <= '9') {
		return false
	}
	for _, c := range []byte(k) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func isIdentifier(v string) bool {
	if v == "" {
		return false
	}
	for _, c := range []byte(v) {
		if !(c == '.' || c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// identifierKey reports whether os-release(5) restricts k's value to a lowercase identifier.
// Such values are written bare, as distributions do (ID=debian); everything else is free text
// and always quoted, so a value never changes form depending on its content.
func identifierKey(k string) bool {
	switch k {
	case "ID", "VERSION_ID", "VERSION_CODENAME", "VARIANT_ID", "BUILD_ID", "IMAGE_ID", "IMAGE_VERSION":
		return true
	}
	return false
}
