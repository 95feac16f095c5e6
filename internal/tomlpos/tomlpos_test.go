package tomlpos

import "testing"

const doc = `name = "x"
[sysctls]
"net.ipv4.ip_forward" = "1"

[[service]]
name = "a"
command = [
  "/bin/a",
  "-v",
]

[[service]]
name = "b"
env = { HOME = "/root", TERM = "vt100" }

[plugins."io.containerd.grpc.v1.cri".registry]
config_path = "/etc/certs.d"
`

func TestLines(t *testing.T) {
	x := New([]byte(doc))
	for _, tc := range []struct {
		path Path
		want string // rendered
		line int
	}{
		{Keys("name"), "name", 1},
		{Keys("sysctls", "net.ipv4.ip_forward"), `sysctls."net.ipv4.ip_forward"`, 3},
		{Keys("service").Index(0).Key("name"), "service[0].name", 6},
		{Keys("service").Index(0).Key("command").Index(1), "service[0].command[1]", 9},
		{Keys("service").Index(1), "service[1]", 12},
		{Keys("service").Index(1).Key("env").Key("TERM"), "service[1].env.TERM", 14},
		{Keys("plugins", "io.containerd.grpc.v1.cri", "registry", "config_path"), `plugins."io.containerd.grpc.v1.cri".registry.config_path`, 17},
		// Not written: the nearest written ancestor's line.
		{Keys("service").Index(1).Key("restart"), "service[1].restart", 12},
		{Keys("nowhere", "at", "all"), "nowhere.at.all", 0},
	} {
		if got := tc.path.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
		if got := x.Line(tc.path); got != tc.line {
			t.Errorf("Line(%s) = %d, want %d", tc.want, got, tc.line)
		}
		if got := x.LineOf(tc.want); got != tc.line {
			t.Errorf("LineOf(%s) = %d, want %d", tc.want, got, tc.line)
		}
	}
	if x.Has(Keys("service").Index(1).Key("restart")) || !x.Has(Keys("service").Index(0).Key("command")) {
		t.Error("Has disagrees with the document")
	}
	if a, b := x.Rank(Keys("name")), x.Rank(Keys("service").Index(0)); a < 0 || b <= a {
		t.Errorf("Rank: name %d, service[0] %d: want document order", a, b)
	}
}

// A decode error inside an array names the element whose bytes hold the error's offset.
func TestFindElement(t *testing.T) {
	x := New([]byte(doc))
	off := len("name = \"x\"\n[sysctls]\n\"net.ipv4.ip_forward\" = \"1\"\n\n[[service]]\nname = \"a\"\ncommand = [\n  \"/bin/a\",\n  ")
	e := x.Find([]string{"service", "command"}, 7, off+1)
	if e == nil || e.Path.String() != "service[0].command[1]" || e.Line != 9 {
		t.Fatalf("Find = %+v, want service[0].command[1] on line 9", e)
	}
	// go-toml names a key inside an inline table by its own name only.
	if e := x.FindUnknown([]string{"TERM"}, 14); e == nil || e.Path.String() != "service[1].env.TERM" {
		t.Fatalf("FindUnknown(TERM) = %+v", e)
	}
}
