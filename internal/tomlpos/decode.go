package tomlpos

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	toml "github.com/pelletier/go-toml/v2"
)

// Error is a problem with a TOML document, rendered on one line as "file:line: key: message", e.g.
//
//	dev.toml:12: service[1].restart: invalid value "sometimes" (want always, on-failure or never)
//
// Empty parts are left out: errors from a Validate method have no File or Line, and syntax errors
// may have no Key.
type Error struct {
	File string // as given to Decode
	Line int    // 1-based; 0 if unknown
	// Key is the offending key's path: kernel.modules[2], service[0].name,
	// sysctls."net.ipv4.ip_forward". Array indexes count from 0. For an unknown key it is the table
	// containing it ("" at the top level) and Msg names the key.
	Key string
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(strings.ReplaceAll(e.Msg, "\n", " "))
	return b.String()
}

// Decode decodes data onto v, a pointer to a struct whose fields carry toml tags, strictly: an
// unknown key, a key spelt in another case than its tag (go-toml matches case-insensitively; ingot's
// files do not) and a value of the wrong type are each an *Error naming file, line and key. Keys
// absent from data keep v's values, so v may hold defaults. The Index it returns places the keys of
// errors found later, by validation.
func Decode(file string, data []byte, v any) (*Index, error) {
	idx := New(data)
	root := reflect.TypeOf(v).Elem()
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return idx, fromDecodeError(file, data, idx, root, err)
	}
	if e := checkCase(idx, root); e != nil {
		e.File = file
		return idx, e
	}
	return idx, nil
}

// fromDecodeError turns go-toml's errors into an *Error with a key path and a message that speaks
// TOML rather than Go.
func fromDecodeError(file string, data []byte, idx *Index, root reflect.Type, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		de := &strict.Errors[0]
		line, _ := de.Position()
		keys := de.Key()
		parent := Keys(keys[:len(keys)-1]...).String()
		if e := idx.FindUnknown(keys, line); e != nil {
			parent = e.Path.Parent().String()
		}
		return &Error{File: file, Line: line, Key: parent, Msg: fmt.Sprintf("unknown key %q", keys[len(keys)-1])}
	}
	var de *toml.DecodeError
	if !errors.As(err, &de) {
		return &Error{File: file, Msg: err.Error()}
	}
	line, col := de.Position()
	keys := de.Key()
	e := &Error{File: file, Line: line, Key: Keys(keys...).String(), Msg: strings.TrimPrefix(de.Error(), "toml: ")}

	got, ok := strings.CutPrefix(e.Msg, "cannot decode TOML ")
	if !ok {
		return e // syntax error, duplicate key, integer overflow...
	}
	got, _, _ = strings.Cut(got, " into ")
	if got == "inline table" {
		got = "table"
	}
	// A dotted key inside a table of strings (sysctls, labels) is read as nested tables.
	for i := 1; i < len(keys)-1; i++ {
		if t := typeAt(root, Keys(keys[:i]...)); t != nil && t.Kind() == reflect.Map {
			if k := t.Elem().Kind(); k != reflect.Map && k != reflect.Struct {
				d := strings.Join(keys[i:], ".")
				e.Key = Keys(keys[:i]...).String()
				e.Msg = fmt.Sprintf("key %s is dotted, so TOML reads it as nested tables; quote it: %q = \"...\"", d, d)
				return e
			}
			break
		}
	}
	path := Keys(keys...)
	if ent := idx.Find(keys, line, offsetAt(data, line, col)); ent != nil {
		path = ent.Path
		e.Key, e.Line = path.String(), ent.Line
	}
	want := "?"
	t := typeAt(root, path)
	if t != nil {
		want = describe(t)
	}
	e.Msg = fmt.Sprintf("wrong type: want %s, got %s", want, got)
	if t != nil && t.Kind() == reflect.Map && got == "table" && strings.HasSuffix(de.Error(), " of type "+t.Elem().String()) {
		// go-toml names the table, not the value in it that is itself a table: in an inline
		// table that is a dotted key.
		e.Msg = fmt.Sprintf("wrong type: a value in this table is a table, want %s (a dotted key is read as nested tables: quote it, \"a.b\" = ...)", describe(t.Elem()))
	}
	return e
}

// offsetAt converts go-toml's 1-based line and byte column to an offset.
func offsetAt(data []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	return off + col - 1
}

// typeAt returns the Go type a key path decodes into, or nil if the path is not in the schema.
func typeAt(t reflect.Type, path Path) reflect.Type {
	for _, s := range path {
		if s.Key != "" {
			t = deref(t)
			if t.Kind() == reflect.Slice { // [[service]] without index
				t = deref(t.Elem())
			}
			switch t.Kind() {
			case reflect.Struct:
				f, exact := fieldByTag(t, s.Key)
				if f == nil || !exact {
					return nil
				}
				t = f.Type
			case reflect.Map:
				t = t.Elem()
			default:
				return nil
			}
		}
		if s.Index >= 0 {
			if t = deref(t); t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
	}
	return deref(t)
}

// deref strips pointers: an optional table is a pointer to its struct.
func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// fieldByTag finds the field of struct t whose toml tag is key, exactly or (exact == false)
// ignoring case, as go-toml matches.
func fieldByTag(t reflect.Type, key string) (f *reflect.StructField, exact bool) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if tag == key {
			return &sf, true
		}
		if strings.EqualFold(tag, key) {
			f = &sf
		}
	}
	return f, false
}

func describe(t reflect.Type) string {
	t = deref(t)
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int:
		return "integer"
	case reflect.Bool:
		return "boolean"
	case reflect.Map:
		return "table of " + describe(t.Elem()) + "s"
	case reflect.Struct:
		return "table"
	case reflect.Slice:
		if deref(t.Elem()).Kind() == reflect.Struct {
			return "array of tables"
		}
		return "array of " + describe(t.Elem()) + "s"
	}
	return t.String()
}

// checkCase reports the first key that go-toml accepted only because it ignores case ("Name" for
// "name").
func checkCase(x *Index, root reflect.Type) *Error {
	for _, e := range x.Entries() {
		t := root
		for i, s := range e.Path {
			if s.Key != "" {
				t = deref(t)
				if t.Kind() == reflect.Slice {
					t = deref(t.Elem())
				}
				if t.Kind() != reflect.Struct {
					break // map keys are free-form
				}
				f, exact := fieldByTag(t, s.Key)
				if f == nil {
					break
				}
				if !exact {
					tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
					return &Error{Line: e.Line, Key: e.Path[:i].String(),
						Msg: fmt.Sprintf("unknown key %q (keys are case-sensitive: did you mean %s?)", s.Key, strconv.Quote(tag))}
				}
				t = f.Type
			}
			if s.Index >= 0 {
				if t = deref(t); t.Kind() == reflect.Slice {
					t = t.Elem()
				}
			}
		}
	}
	return nil
}
