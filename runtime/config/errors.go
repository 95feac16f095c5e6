package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Error is a bad value in a config.toml or hosts.toml, rendered on one line as
// "file:line: key: message", e.g.
//
//	config.toml:12: plugins."io.containerd.grpc.v1.cri".max_container_log_line_size: want an integer, got string
//
// Empty parts are left out (a syntax error may have no key).
type Error struct {
	File string // as given to Parse, or the hosts.toml path
	Line int    // 1-based; 0 if unknown
	Key  string // dotted TOML path, quoted where needed; array elements as [i]
	Msg  string
}

func (e *Error) Error() string { return render(e.File, e.Line, e.Key, e.Msg) }

// Warning is a key that was read but does not do what it does in containerd:
// an unknown key, or a known one that has no meaning for ingot. Warnings never
// stop a node from booting; `ingot config validate` prints them.
type Warning struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (w Warning) String() string { return render(w.File, w.Line, w.Key, w.Msg) }

func render(file string, line int, key, msg string) string {
	var b strings.Builder
	if file != "" {
		b.WriteString(file)
		if line > 0 {
			fmt.Fprintf(&b, ":%d", line)
		}
		b.WriteString(": ")
	}
	if key != "" {
		b.WriteString(key)
		b.WriteString(": ")
	}
	b.WriteString(strings.ReplaceAll(msg, "\n", " "))
	return b.String()
}

// elem marks a path step that is an array index; see display.
const elem = "\x01"

// display renders a key path the way containerd's documentation writes it:
// plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io".endpoint[1].
func display(path []string) string {
	var b strings.Builder
	for i, k := range path {
		if n, ok := strings.CutPrefix(k, elem); ok {
			fmt.Fprintf(&b, "[%s]", n)
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(quoteKey(k))
	}
	return b.String()
}

// quoteKey returns k as a TOML bare key if it is one, else quoted.
func quoteKey(k string) string {
	if k == "" {
		return `""`
	}
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(k)
		}
	}
	return k
}

// with returns a copy of path extended by keys; paths are shared, so they are
// never appended to in place.
func with(path []string, keys ...string) []string {
	return append(path[:len(path):len(path)], keys...)
}

func index(path []string, i int) []string { return with(path, elem+strconv.Itoa(i)) }
