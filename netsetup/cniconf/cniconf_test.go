package cniconf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefault(t *testing.T) {
	l := Default()
	if ok, why := l.Native(); !ok {
		t.Fatalf("default conflist is not native: %s", why)
	}
	b := l.Bridge()
	if b == nil || b.Name != "cni0" || !b.IsGateway || !b.IPMasq || !b.HairpinMode || b.IPAM == nil {
		t.Fatalf("bridge %+v", b)
	}
	r := b.IPAM.RangeSets[0][0]
	want := Range{Subnet: netip.MustParsePrefix("10.88.0.0/16"), Start: netip.MustParseAddr("10.88.0.1"),
		End: netip.MustParseAddr("10.88.255.254"), Gateway: netip.MustParseAddr("10.88.0.1")}
	if r != want {
		t.Errorf("range %+v, want %+v", r, want)
	}
	if len(b.IPAM.Routes) != 1 || b.IPAM.Routes[0].Dst.String() != "0.0.0.0/0" || b.IPAM.Routes[0].GW.IsValid() {
		t.Errorf("routes %+v", b.IPAM.Routes)
	}
	if pm := l.PortMap(); pm == nil || !pm.PortMappings || !pm.SNAT {
		t.Errorf("portmap %+v", pm)
	}
	if len(l.Warnings) != 0 {
		t.Errorf("warnings: %v", l.Warnings)
	}
}

// The seed document's example, verbatim: valid, native, but it warns that without isGateway the
// default route reaches nothing.
const seed = `{
    "cniVersion": "0.4.0",
    "name": "containerd-net",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "ipMasq": true,
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [{
                        "subnet": "10.88.0.0/16"
                    }]
                ],
                "routes": [
                    { "dst": "0.0.0.0/0" }
                ]
            }
        }
    ]
}`

func TestSeedExample(t *testing.T) {
	l, err := Parse("seed.conflist", []byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := l.Native(); !ok {
		t.Fatal(why)
	}
	if len(l.Warnings) != 1 || !strings.Contains(l.Warnings[0], "plugins[0].isGateway") {
		t.Errorf("warnings %q", l.Warnings)
	}
}

func TestSingleConfIsWrapped(t *testing.T) {
	l, err := Parse("10-br.conf", []byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"br9",
		"ipam":{"type":"host-local","subnet":"192.168.50.0/24","rangeStart":"192.168.50.10","rangeEnd":"192.168.50.20","gateway":"192.168.50.254"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := l.Bridge().IPAM.RangeSets[0][0]
	if l.Bridge().Name != "br9" || r.Start.String() != "192.168.50.10" || r.End.String() != "192.168.50.20" || r.Gateway.String() != "192.168.50.254" {
		t.Errorf("%+v %+v", l.Bridge(), r)
	}
	if !strings.Contains(string(l.Bytes), `"plugins"`) {
		t.Errorf("not wrapped: %s", l.Bytes)
	}
}

func TestDelegated(t *testing.T) {
	for _, tc := range []struct{ name, conf, why string }{
		{"calico", `{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico","ipam":{"type":"calico-ipam"}},{"type":"portmap","capabilities":{"portMappings":true}}]}`, `plugin type "calico"`},
		{"dhcp ipam", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"dhcp"}}]}`, `IPAM type "dhcp"`},
		{"vlan", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","vlan":5,"ipam":{"type":"host-local","subnet":"10.1.0.0/16"}}]}`, `"vlan"`},
		{"tuning sysctl", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/16"}},{"type":"tuning","sysctl":{"net.core.somaxconn":"500"}}]}`, `"sysctl"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Parse("x.conflist", []byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			if ok, why := l.Native(); ok || !strings.Contains(why, tc.why) {
				t.Errorf("native %v, why %q; want it to mention %s", ok, why, tc.why)
			}
		})
	}
	// firewall, loopback and an option-less tuning do not force delegation.
	l, err := Parse("x.conflist", []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"},{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/16"}},{"type":"firewall"},{"type":"tuning"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if ok, why := l.Native(); !ok {
		t.Error(why)
	}
}

func TestErrors(t *testing.T) {
	const pre = `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local",`
	for _, tc := range []struct{ name, conf, want string }{
		{"syntax", "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"n\"\n  \"plugins\": []\n}", "bad.conflist: line 4, column 3: not valid JSON"},
		{"no version", `{"name":"n","plugins":[{"type":"bridge"}]}`, "bad.conflist: cniVersion: missing"},
		{"bad version", `{"cniVersion":"9.9","name":"n","plugins":[{"type":"bridge"}]}`, `cniVersion: "9.9" is not a CNI version`},
		{"bad name", `{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"bridge"}]}`, `name: "a b" is not a valid network name`},
		{"no plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, "plugins: empty"},
		{"no type", `{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}`, "plugins[0].type: missing"},
		{"type path", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}`, `plugins[0].type: "../x" is not a plugin name`},
		{"long bridge", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","bridge":"averyveryverylongname"}]}`, "plugins[0].bridge: \"averyveryverylongname\": longer than 15"},
		{"mtu", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","mtu":20}]}`, "plugins[0].mtu: want a number from 68"},
		{"bool", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipMasq":"yes"}]}`, `plugins[0].ipMasq: want true or false, got "yes"`},
		{"subnet", pre + `"ranges":[[{"subnet":"10.88.0.0/33"}]]}}]}`, `plugins[0].ipam.ranges[0][0].subnet: "10.88.0.0/33" is not a CIDR`},
		{"tiny subnet", pre + `"ranges":[[{"subnet":"10.88.0.0/31"}]]}}]}`, "ranges[0][0].subnet: 10.88.0.0/31 is too small"},
		{"start outside", pre + `"ranges":[[{"subnet":"10.88.0.0/24","rangeStart":"10.89.0.1"}]]}}]}`, "ranges[0][0].rangeStart: 10.89.0.1 is outside subnet 10.88.0.0/24"},
		{"start after end", pre + `"ranges":[[{"subnet":"10.88.0.0/24","rangeStart":"10.88.0.9","rangeEnd":"10.88.0.5"}]]}}]}`, "rangeEnd: 10.88.0.5 is before rangeStart 10.88.0.9"},
		{"broadcast", pre + `"ranges":[[{"subnet":"10.88.0.0/24","rangeEnd":"10.88.0.255"}]]}}]}`, "includes the network or broadcast address"},
		{"overlap in set", pre + `"ranges":[[{"subnet":"10.88.0.0/16"},{"subnet":"10.88.3.0/24"}]]}}]}`, "plugins[0].ipam.ranges[0][1].subnet: 10.88.3.0/24 overlaps plugins[0].ipam.ranges[0][0].subnet (10.88.0.0/16)"},
		{"overlap across sets", pre + `"ranges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"10.0.0.0/8"}]]}}]}`, "ranges[1][0].subnet: 10.0.0.0/8 overlaps"},
		{"overlap across plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","subnet":"10.1.0.0/16"}},{"type":"macvlan","ipam":{"type":"host-local","subnet":"10.1.2.0/24"}}]}`, "plugins[1].ipam.subnet: 10.1.2.0/24 overlaps plugins[0].ipam.subnet"},
		{"mixed family", pre + `"ranges":[[{"subnet":"10.88.0.0/16"},{"subnet":"fd00::/64"}]]}}]}`, "mixes address families"},
		{"both forms", pre + `"subnet":"10.1.0.0/16","ranges":[[{"subnet":"10.88.0.0/16"}]]}}]}`, `ipam.subnet: set together with "ranges"`},
		{"route", pre + `"subnet":"10.1.0.0/16","routes":[{"dst":"default"}]}}]}`, `ipam.routes[0].dst: "default" is not a CIDR`},
		{"route family", pre + `"subnet":"10.1.0.0/16","routes":[{"dst":"::/0"}]}}]}`, "ipam.routes[0].dst: ::/0 has no gw and no range of its family"},
		{"ipam type", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{}}]}`, "plugins[0].ipam.type: missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.conflist", []byte(tc.conf))
			if err == nil {
				t.Fatalf("accepted; want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "bad.conflist: ") {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestWarnings(t *testing.T) {
	l, err := Parse("w.conflist", []byte(`{"cniVersion":"1.0.0","name":"n","colour":"red","plugins":[
		{"type":"bridge","isGateway":true,"flavour":1,"ipam":{"type":"host-local","subnet":"10.1.0.0/16","dataDir":"/x"}},
		{"type":"portmap"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(l.Warnings, "\n")
	for _, want := range []string{"w.conflist: colour: unknown key", "plugins[0].flavour: unknown key", "plugins[0].ipam.dataDir: ignored", "plugins[1].capabilities: portmap without"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty dir: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("not config"), 0o644)
	os.WriteFile(filepath.Join(dir, "20-b.conflist"), []byte("{"), 0o644)
	os.WriteFile(filepath.Join(dir, "10-a.conflist"), DefaultConflist, 0o644)
	l, err := Load(dir)
	if err != nil || l.File != filepath.Join(dir, "10-a.conflist") {
		t.Fatalf("%v %v", l, err)
	}
	os.WriteFile(filepath.Join(dir, "05-bad.conf"), []byte(`{"cniVersion":"1.0.0","name":"n","type":"bridge","mtu":-1}`), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "05-bad.conf: plugins[0].mtu") {
		t.Errorf("bad first file: %v", err)
	}
}

func TestV6Range(t *testing.T) {
	l, err := Parse("v6.conflist", []byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","isGateway":true,
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"fd00:88::/64"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r := l.Bridge().IPAM.RangeSets[1][0]
	if r.Start.String() != "fd00:88::1" || r.End.String() != "fd00:88::ffff:ffff:ffff:ffff" {
		t.Errorf("%+v", r)
	}
}

func TestDefaultFor(t *testing.T) {
	l, err := DefaultFor([]netip.Prefix{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParsePrefix("fd00:10:244:3::/64")})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(l.Subnets()); got != "[10.244.3.0/24 fd00:10:244:3::/64]" {
		t.Errorf("subnets %s", got)
	}
	if r := l.Bridge().IPAM.Routes; len(r) != 2 || r[1].Dst.String() != "::/0" {
		t.Errorf("routes %v", r)
	}
	if ok, why := l.Native(); !ok || l.PortMap() == nil || !l.Bridge().HairpinMode {
		t.Errorf("native %v %s", ok, why)
	}
	if _, err := DefaultFor([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.3.0/24")}); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Errorf("overlapping pod CIDRs: %v", err)
	}
}
