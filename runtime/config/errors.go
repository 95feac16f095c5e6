package config

import (
	"fmt"
	"strconv"
	"strings"

	"ingot.dev/ingot/internal/tomlpos"
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
func display(path []string) string { return toPath(path).String() }

// toPath converts a path of keys and elem-marked indexes to tomlpos's form.
func toPath(path []string) tomlpos.Path {
	var p tomlpos.Path
	for _, k := range path {
		if n, ok := strings.CutPrefix(k, elem); ok {
			i, _ := strconv.Atoi(n)
			p = p.Index(i)
			continue
		}
		p = p.Key(k)
	}
	return p
}

// with returns a copy of path extended by keys; paths are shared, so they are
// never appended to in place.
func with(path []string, keys ...string) []string {
	return append(path[:len(path):len(path)], keys...)
}

func index(path []string, i int) []string { return with(path, elem+strconv.Itoa(i)) }
