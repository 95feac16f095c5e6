package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"

	"ingot.dev/ingot/internal/tomlpos"
)

// doc is a decoded TOML document, where each of its keys sits in the file, and
// the errors and warnings found while reading it. go-toml's decoder keeps no
// positions once it has filled a value, so lines come from a second pass with
// its unstable parser (internal/tomlpos).
type doc struct {
	file  string
	root  map[string]any
	idx   *tomlpos.Index
	errs  []*Error
	warns []Warning
}

func readDoc(file string, data []byte) (*doc, error) {
	var root map[string]any
	if err := toml.Unmarshal(data, &root); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, &Error{File: file, Line: line, Key: display(de.Key()), Msg: strings.TrimPrefix(de.Error(), "toml: ")}
		}
		return nil, &Error{File: file, Msg: err.Error()}
	}
	if root == nil {
		root = map[string]any{}
	}
	return &doc{file: file, root: root, idx: tomlpos.New(data)}, nil
}

// err returns the document's errors, in file order, or nil.
func (d *doc) err() error {
	sort.SliceStable(d.errs, func(i, j int) bool { return d.errs[i].Line < d.errs[j].Line })
	switch len(d.errs) {
	case 0:
		return nil
	case 1:
		return d.errs[0]
	}
	errs := make([]error, len(d.errs))
	for i, e := range d.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

func (d *doc) warnings() []Warning {
	sort.SliceStable(d.warns, func(i, j int) bool { return d.warns[i].Line < d.warns[j].Line })
	return d.warns
}

// line returns the line of path, or of its nearest ancestor in the document.
func (d *doc) line(path []string) int { return d.idx.Line(toPath(path)) }

func (d *doc) errorf(path []string, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: d.line(path), Key: display(path), Msg: fmt.Sprintf(format, args...)})
}

func (d *doc) warn(path []string, msg string) {
	d.warns = append(d.warns, Warning{File: d.file, Line: d.line(path), Key: display(path), Msg: msg})
}

// table reads one TOML table against what ingot knows of it: typed getters
// record a type error and report false; keys nobody asked for become
// "unknown key" warnings in done.
type table struct {
	d    *doc
	path []string
	m    map[string]any // nil when the table is absent
	used map[string]bool
	// hint, if set, explains an unknown key (e.g. where version 3 reads it).
	hint func(key string) string
}

func (d *doc) top() *table { return &table{d: d, m: d.root, used: map[string]bool{}} }

func (t *table) present() bool { return t.m != nil }

// keys returns the table's keys in document order.
func (t *table) keys() []string {
	ks := make([]string, 0, len(t.m))
	for k := range t.m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		oi, oj := t.d.idx.Rank(toPath(with(t.path, ks[i]))), t.d.idx.Rank(toPath(with(t.path, ks[j])))
		if oi != oj {
			return oi < oj
		}
		return ks[i] < ks[j]
	})
	return ks
}

// get returns the value of key and its path as written. Like containerd's
// decoder (go-toml), a key that differs only in case is accepted, with a
// warning so the file can be fixed.
func (t *table) get(key string) (any, []string, bool) {
	if v, ok := t.m[key]; ok {
		t.used[key] = true
		return v, with(t.path, key), true
	}
	for _, k := range t.keys() {
		if !t.used[k] && strings.EqualFold(k, key) {
			t.used[k] = true
			p := with(t.path, k)
			t.d.warn(p, fmt.Sprintf("read as %s (containerd ignores the case of keys; ingot's documentation does not)", key))
			return t.m[k], p, true
		}
	}
	return nil, nil, false
}

func (t *table) typeErr(path []string, want string, v any) {
	t.d.errorf(path, "want %s, got %s", want, tomlType(v))
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "table"
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "datetime"
	}
	return fmt.Sprintf("%T", v)
}

func (t *table) str(key string, dst *string) bool {
	v, p, ok := t.get(key)
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		t.typeErr(p, "a string", v)
		return false
	}
	*dst = s
	return true
}

func (t *table) integer(key string, dst *int) bool {
	v, p, ok := t.get(key)
	if !ok {
		return false
	}
	n, ok := v.(int64)
	if !ok || int64(int(n)) != n {
		t.typeErr(p, "an integer", v)
		return false
	}
	*dst = int(n)
	return true
}

func (t *table) boolean(key string, dst *bool) bool {
	v, p, ok := t.get(key)
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		t.typeErr(p, "a boolean", v)
		return false
	}
	*dst = b
	return true
}

func (t *table) strs(key string, dst *[]string) bool {
	v, p, ok := t.get(key)
	if !ok {
		return false
	}
	out, ok := stringList(t, p, v)
	if ok {
		*dst = out
	}
	return ok
}

// stringList converts an array of strings, naming a bad element by index.
func stringList(t *table, p []string, v any) ([]string, bool) {
	a, ok := v.([]any)
	if !ok {
		t.typeErr(p, "an array of strings", v)
		return nil, false
	}
	out := make([]string, 0, len(a))
	for i, e := range a {
		s, ok := e.(string)
		if !ok {
			t.typeErr(index(p, i), "a string", e)
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// stringOrList converts a string or an array of strings (HTTP header values).
func stringOrList(t *table, p []string, v any) ([]string, bool) {
	if s, ok := v.(string); ok {
		return []string{s}, true
	}
	if _, ok := v.([]any); !ok {
		t.typeErr(p, "a string or an array of strings", v)
		return nil, false
	}
	return stringList(t, p, v)
}

// duration reads a Go duration string ("4h", "5m0s"), as containerd does.
func (t *table) duration(key string, dst *time.Duration) bool {
	var s string
	if !t.str(key, &s) {
		return false
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur < 0 {
		t.errorf(key, "want a duration such as \"5m0s\", got %q", s)
		return false
	}
	*dst = dur
	return true
}

// errorf reports a bad value of key in this table.
func (t *table) errorf(key string, format string, args ...any) {
	t.d.errorf(with(t.path, key), format, args...)
}

func (t *table) warnf(key string, format string, args ...any) {
	t.d.warn(with(t.path, key), fmt.Sprintf(format, args...))
}

// sub returns the table at key; an absent one reads as empty.
func (t *table) sub(key string) *table {
	s := &table{d: t.d, path: with(t.path, key), used: map[string]bool{}}
	v, p, ok := t.get(key)
	if !ok {
		return s
	}
	s.path = p
	m, ok := v.(map[string]any)
	if !ok {
		t.typeErr(p, "a table", v)
		return s
	}
	s.m = m
	return s
}

// anyValue as the default of unused means: accept any type, and warn whatever
// the value.
type anyValue struct{}

// unusedKey is a containerd key with no meaning for ingot. It is type-checked
// against def; set to def (containerd's default, or a value that asks for what
// ingot does anyway) it is silent, otherwise why becomes a warning. A table
// default (map[string]any{}) is silent only when the table is empty.
type unusedKey struct {
	key string
	def any
	why string // "" = silent whatever the value: ingot behaves as any value asks
}

func (t *table) unused(keys ...unusedKey) {
	for _, u := range keys {
		v, p, ok := t.get(u.key)
		if !ok {
			continue
		}
		switch def := u.def.(type) {
		case string:
			if _, ok := v.(string); !ok {
				t.typeErr(p, "a string", v)
				continue
			}
		case int:
			if _, ok := v.(int64); !ok {
				t.typeErr(p, "an integer", v)
				continue
			}
			v = int(v.(int64))
		case bool:
			if _, ok := v.(bool); !ok {
				t.typeErr(p, "a boolean", v)
				continue
			}
		case []string:
			s, ok := stringList(t, p, v)
			if !ok {
				continue
			}
			if len(s) == 0 && len(def) == 0 {
				continue
			}
			v = s
		case map[string]any:
			m, ok := v.(map[string]any)
			if !ok {
				t.typeErr(p, "a table", v)
				continue
			}
			if len(m) == 0 {
				continue
			}
		}
		if u.why == "" || reflect.DeepEqual(v, u.def) {
			continue
		}
		t.d.warn(p, u.why)
	}
}

// done warns about every key of the table that no reader asked for.
func (t *table) done() {
	for _, k := range t.keys() {
		if t.used[k] {
			continue
		}
		msg := "unknown key; ignored"
		if t.hint != nil {
			if h := t.hint(k); h != "" {
				msg += " (" + h + ")"
			}
		}
		t.d.warn(with(t.path, k), msg)
	}
}

// oneOf reports whether s is one of want; if not it records an error.
func (t *table) oneOf(key, s string, want ...string) bool {
	if slices.Contains(want, s) {
		return true
	}
	t.errorf(key, "invalid value %q (want %s)", s, orList(want))
	return false
}

func orList(want []string) string {
	q := make([]string, len(want))
	for i, w := range want {
		q[i] = fmt.Sprintf("%q", w)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
