package profiles

import (
	"strings"
	"testing"
)

func TestBadCNIConflist(t *testing.T) {
	doc := "name = \"x\"\n[network]\ncni = '''\n" +
		`{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "bridge", "ipam": {"type": "host-local",
		  "ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "10.1.2.0/24"}]]}}]}` + "\n'''\n"
	_, err := Parse("x.toml", []byte(doc))
	if err == nil || !strings.HasPrefix(err.Error(), "x.toml:3: network.cni: the embedded conflist") || !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("err = %v", err)
	}
}
