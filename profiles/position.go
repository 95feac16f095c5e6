package profiles

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// seg is one step of a key path: a key, an array index, or a key followed by
// an index (service[1]).
type seg struct {
	key string // "" for an index into an array of arrays
	idx int    // -1 if none
}

// display renders a path the way errors show it: service[1].command[0],
// sysctls."net.ipv4.ip_forward".
func display(path []seg) string {
	var b strings.Builder
	for i, s := range path {
		if s.key != "" {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(quoteKey(s.key))
		}
		if s.idx >= 0 {
			fmt.Fprintf(&b, "[%d]", s.idx)
		}
	}
	return b.String()
}

// quoteKey returns k as a TOML bare key if it is one, else quoted.
func quoteKey(k string) string {
	for _, c := range []byte(k) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(k)
		}
	}
	if k == "" {
		return `""`
	}
	return k
}

// with returns a copy of path extended by s; paths are shared between
// entries, so they are never appended to in place.
func with(path []seg, s seg) []seg {
	return append(path[:len(path):len(path)], s)
}

// indexed returns path with its last step indexed by i.
func indexed(path []seg, i int) []seg {
	if len(path) > 0 && path[len(path)-1].idx < 0 {
		out := with(path[:len(path)-1], path[len(path)-1])
		out[len(out)-1].idx = i
		return out
	}
	return with(path, seg{idx: i})
}

// entry is where one key, table or array element sits in the document.
type entry struct {
	path       []seg
	line       int
	start, end int // byte range of a scalar value; end == 0 if not a scalar
}

// docIndex maps key paths to lines, so that errors found after decoding
// (semantic ones, and type errors inside arrays) can name a line. go-toml's
// decoder keeps no positions once it has filled the struct.
type docIndex struct {
	entries []entry
	byPath  map[string]int // display(path) -> first entry
}

// indexDocument walks data with go-toml's unstable parser. It is best-effort:
// on a syntax error it returns what it has indexed so far (the decoder reports
// the syntax error itself).
func indexDocument(data []byte) *docIndex {
	x := &docIndex{byPath: map[string]int{}}
	var p unstable.Parser
	p.Reset(data)
	tables := map[string]int{} // array-of-tables path -> elements so far
	var table []seg
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			keys, line := keyParts(&p, n)
			var path []seg
			for i, k := range keys {
				path = with(path, seg{key: k, idx: -1})
				if n.Kind == unstable.ArrayTable && i == len(keys)-1 {
					d := display(path)
					path = indexed(path, tables[d])
					tables[d]++
				} else if c := tables[display(path)]; c > 0 {
					// [service.x] after [[service]] extends the last element.
					path = indexed(path, c-1)
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
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if keys == nil {
			line = p.Shape(k.Raw).Start.Line
		}
		keys = append(keys, string(k.Data))
	}
	return keys, line
}

func (x *docIndex) keyValue(p *unstable.Parser, table []seg, n *unstable.Node) {
	keys, line := keyParts(p, n)
	path := table
	for _, k := range keys {
		path = with(path, seg{key: k, idx: -1})
		x.add(path, line, 0, 0)
	}
	x.value(p, path, line, n.Value())
}

func (x *docIndex) value(p *unstable.Parser, path []seg, line int, v *unstable.Node) {
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
			elem := indexed(path, i)
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

// add records path; the first occurrence wins, except that a scalar's byte
// range is filled in when the key was recorded without one.
func (x *docIndex) add(path []seg, line, start, end int) {
	d := display(path)
	if i, ok := x.byPath[d]; ok {
		if end > 0 && x.entries[i].end == 0 {
			x.entries[i].start, x.entries[i].end = start, end
		}
		return
	}
	x.byPath[d] = len(x.entries)
	x.entries = append(x.entries, entry{path: path, line: line, start: start, end: end})
}

// line returns the line of the key at path (as rendered by display), or of its
// nearest ancestor present in the document; 0 if none is.
func (x *docIndex) line(path string) int {
	for path != "" {
		if i, ok := x.byPath[path]; ok {
			return x.entries[i].line
		}
		path = parentPath(path)
	}
	return 0
}

// parentPath strips the last step from a displayed path, minding quotes.
func parentPath(path string) string {
	cut, quoted := 0, false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case (c == '.' || c == '[') && !quoted:
			cut = i
		}
	}
	return path[:cut]
}

// find returns the entry for a go-toml error at keys/line/offset: the value
// containing offset if any (so an element of an array is named by its index),
// else one on that line, else the first with those keys.
func (x *docIndex) find(keys []string, line, offset int) *entry {
	var onLine, first *entry
	for i := range x.entries {
		e := &x.entries[i]
		if !sameKeys(e.path, keys) {
			continue
		}
		if e.end > 0 && e.start <= offset && offset < e.end {
			return e
		}
		if onLine == nil && e.line == line {
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

// findUnknown returns the entry for an unknown key on line. go-toml names a
// key inside an inline table by its own name only, so keys may be a suffix.
func (x *docIndex) findUnknown(keys []string, line int) *entry {
	if e := x.find(keys, line, -1); e != nil {
		return e
	}
	for i := range x.entries {
		e := &x.entries[i]
		if e.line == line && len(e.path) >= len(keys) && sameKeys(e.path[len(e.path)-len(keys):], keys) {
			return e
		}
	}
	return nil
}

func sameKeys(path []seg, keys []string) bool {
	n := 0
	for _, s := range path {
		if s.key == "" {
			continue
		}
		if n >= len(keys) || keys[n] != s.key {
			return false
		}
		n++
	}
	return n == len(keys)
}
