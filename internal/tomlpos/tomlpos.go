// Package tomlpos maps the keys of a TOML document to the lines they sit on, so that errors found
// after decoding (a bad value, a semantic rule, an unknown key) can say file:line:key. go-toml's
// decoder keeps no positions once it has filled a value; this package makes a second pass over
// the text with go-toml's unstable parser. Profiles and the runtime's config.toml both use it, and
// so will any other TOML file ingot reads.
//
// Paths are rendered the way error messages show them: service[1].command[0],
// sysctls."net.ipv4.ip_forward", plugins."io.containerd.grpc.v1.cri".registry.
package tomlpos

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// Step is one step of a key path: a key, an index into an array, or a key followed by an index
// (service[1]).
type Step struct {
	Key   string // "" for an index into an array of arrays
	Index int    // -1 if none
}

// Path is a key path. Paths share their backing arrays, so they are never appended to in place:
// use Key and Index to extend one.
type Path []Step

// Keys returns the path of plain keys.
func Keys(keys ...string) Path {
	var p Path
	for _, k := range keys {
		p = p.Key(k)
	}
	return p
}

// Key returns a copy of p extended by key k.
func (p Path) Key(k string) Path { return append(p[:len(p):len(p)], Step{Key: k, Index: -1}) }

// Index returns a copy of p whose last step is indexed by i (a new index step if it already is).
func (p Path) Index(i int) Path {
	if len(p) > 0 && p[len(p)-1].Index < 0 {
		out := append(p[:len(p)-1:len(p)-1], p[len(p)-1])
		out[len(out)-1].Index = i
		return out
	}
	return append(p[:len(p):len(p)], Step{Index: i})
}

// Parent returns p without its last step.
func (p Path) Parent() Path {
	if len(p) == 0 {
		return p
	}
	return p[:len(p)-1]
}

// String renders p as error messages show it.
func (p Path) String() string {
	var b strings.Builder
	for i, s := range p {
		if s.Key != "" {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(QuoteKey(s.Key))
		}
		if s.Index >= 0 {
			fmt.Fprintf(&b, "[%d]", s.Index)
		}
	}
	return b.String()
}

// QuoteKey returns k as a TOML bare key if it is one, else quoted.
func QuoteKey(k string) string {
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

// Entry is where one key, table or array element sits in the document.
type Entry struct {
	Path       Path
	Line       int
	Start, End int // byte range of a scalar value; End == 0 if not a scalar
}

// Index maps the key paths of one document to their lines, in document order.
type Index struct {
	entries []Entry
	byPath  map[string]int // Path.String() -> first entry
}

// New indexes data. It is best-effort: on a syntax error it returns what it has indexed so far
// (the decoder reports the syntax error itself).
func New(data []byte) *Index {
	x := &Index{byPath: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	tables := map[string]int{} // array-of-tables path -> elements so far
	var table Path
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			keys, line := keyParts(&p, n)
			var path Path
			for i, k := range keys {
				path = path.Key(k)
				if n.Kind == unstable.ArrayTable && i == len(keys)-1 {
					d := path.String()
					path = path.Index(tables[d])
					tables[d]++
				} else if c := tables[path.String()]; c > 0 {
					// [service.x] after [[service]] extends the last element.
					path = path.Index(c - 1)
				}
				x.add(path, line, 0, 0)
			}
			table = path
		case unstable.KeyValue:
			x.keyValue(&p, table, n)
		}
	}
	return x
}

func keyParts(p *unstable.Parser, n *unstable.Node) (keys []string, line int) {
	for it := n.Key(); it.Next(); {
		k := it.Node()
		if keys == nil {
			line = p.Shape(k.Raw).Start.Line
		}
		keys = append(keys, string(k.Data))
	}
	return keys, line
}

func (x *Index) keyValue(p *unstable.Parser, table Path, n *unstable.Node) {
	keys, line := keyParts(p, n)
	path := table
	for _, k := range keys {
		path = path.Key(k)
		x.add(path, line, 0, 0)
	}
	x.value(p, path, line, n.Value())
}

func (x *Index) value(p *unstable.Parser, path Path, line int, v *unstable.Node) {
	switch v.Kind {
	case unstable.Array:
		i := 0
		for it := v.Children(); it.Next(); {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			l := line
			if c.Raw.Length > 0 {
				l = p.Shape(c.Raw).Start.Line
			}
			elem := path.Index(i)
			x.add(elem, l, 0, 0)
			x.value(p, elem, l, c)
			i++
		}
	case unstable.InlineTable:
		for it := v.Children(); it.Next(); {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				x.keyValue(p, path, c)
			}
		}
	default:
		start := int(v.Raw.Offset)
		x.add(path, line, start, start+int(v.Raw.Length))
	}
}

// add records path; the first occurrence wins, except that a scalar's byte range is filled in
// when the key was recorded without one.
func (x *Index) add(path Path, line, start, end int) {
	d := path.String()
	if i, ok := x.byPath[d]; ok {
		if end > 0 && x.entries[i].End == 0 {
			x.entries[i].Start, x.entries[i].End = start, end
		}
		return
	}
	x.byPath[d] = len(x.entries)
	x.entries = append(x.entries, Entry{Path: path, Line: line, Start: start, End: end})
}

// Entries returns every key, table and array element, in document order.
func (x *Index) Entries() []Entry { return x.entries }

// Has reports whether path is written in the document.
func (x *Index) Has(path Path) bool {
	_, ok := x.byPath[path.String()]
	return ok
}

// Rank returns path's position in document order, or -1 when it is not written.
func (x *Index) Rank(path Path) int {
	if i, ok := x.byPath[path.String()]; ok {
		return i
	}
	return -1
}

// Line returns the line of path, or of its nearest ancestor written in the document; 0 if none
// is.
func (x *Index) Line(path Path) int { return x.LineOf(path.String()) }

// LineOf is Line for a path as rendered by Path.String (the Key of an error).
func (x *Index) LineOf(key string) int {
	for key != "" {
		if i, ok := x.byPath[key]; ok {
			return x.entries[i].Line
		}
		key = parent(key)
	}
	return 0
}

// parent strips the last step from a rendered path, minding quotes.
func parent(key string) string {
	cut, quoted := 0, false
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case (c == '.' || c == '[') && !quoted:
			cut = i
		}
	}
	return key[:cut]
}

// Find returns the entry for a go-toml decode error at keys/line/offset: the value containing
// offset if any (so an element of an array is named by its index), else one on that line, else
// the first with those keys. nil if none has those keys.
func (x *Index) Find(keys []string, line, offset int) *Entry {
	var onLine, first *Entry
	for i := range x.entries {
		e := &x.entries[i]
		if !sameKeys(e.Path, keys) {
			continue
		}
		if e.End > 0 && e.Start <= offset && offset < e.End {
			return e
		}
		if onLine == nil && e.Line == line {
			onLine = e
		}
		if first == nil {
			first = e
		}
	}
	if onLine != nil {
		return onLine
	}
	return first
}

// FindUnknown returns the entry for an unknown key that go-toml reports on line. go-toml names a
// key inside an inline table by its own name only, so keys may be a suffix of the path.
func (x *Index) FindUnknown(keys []string, line int) *Entry {
	if e := x.Find(keys, line, -1); e != nil {
		return e
	}
	for i := range x.entries {
		e := &x.entries[i]
		if e.Line == line && len(e.Path) >= len(keys) && sameKeys(e.Path[len(e.Path)-len(keys):], keys) {
			return e
		}
	}
	return nil
}

// sameKeys reports whether path's keys, ignoring indexes, are keys.
func sameKeys(path Path, keys []string) bool {
	n := 0
	for _, s := range path {
		if s.Key == "" {
			continue
		}
		if n >= len(keys) || keys[n] != s.Key {
			return false
		}
		n++
	}
	return n == len(keys)
}
