package cniexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/podnet"
)

// fakePlugin logs each call (command, CNI_ARGS, stdin) next to itself and answers ADD with a
// fixed result, standing in for an external plugin binary.
const fakePlugin = `#!/bin/sh
log="$(dirname "$0")/calls"
printf '%s %s %s ' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_ARGS" >>"$log"
cat >>"$log"
echo >>"$log"
case "$CNI_COMMAND" in
ADD) echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"0a:58:0a:63:00:05","sandbox":"'"$CNI_NETNS"'"}],"ips":[{"address":"10.99.0.5/24","gateway":"10.99.0.1","interface":0}]}' ;;
esac
`

func setup(t *testing.T) (*Delegate, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "fakenet"), []byte(fakePlugin), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := cniconf.Parse("ext.conflist", []byte(`{"cniVersion":"1.0.0","name":"ext","plugins":[{"type":"fakenet","capabilities":{"portMappings":true}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := conf.Native(); ok {
		t.Fatal("fakenet is native?")
	}
	d, err := New(Options{Conf: conf, BinDirs: []string{bin}, CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	return d, filepath.Join(bin, "calls")
}

func TestDelegateLifecycle(t *testing.T) {
	d, calls := setup(t)
	ctx := context.Background()
	if err := d.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := d.Setup(ctx, podnet.PodNet{ID: "sandbox1", Name: "web", Namespace: "prod", UID: "uid-1", NetNS: "/run/netns/x",
		PortMappings: []podnet.PortMapping{{Protocol: "TCP", ContainerPort: 80, HostPort: 8080}, {ContainerPort: 9090}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].String() != "10.99.0.5/24" || res.Gateways[0].String() != "10.99.0.1" || res.MAC != "0a:58:0a:63:00:05" {
		t.Errorf("result %+v", res)
	}
	st, err := d.Status(ctx, "sandbox1")
	if err != nil || st.IPs[0] != res.IPs[0] || st.NetNS != "/run/netns/x" {
		t.Errorf("status %+v %v", st, err)
	}
	if err := d.Teardown(ctx, "sandbox1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(ctx, "sandbox1"); !errors.Is(err, podnet.ErrNotFound) {
		t.Errorf("status after teardown: %v", err)
	}
	log, _ := os.ReadFile(calls)
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ADD sandbox1 ") || !strings.HasPrefix(lines[1], "DEL sandbox1 ") {
		t.Fatalf("calls:\n%s", log)
	}
	for _, want := range []string{"K8S_POD_NAMESPACE=prod", "K8S_POD_NAME=web", "K8S_POD_INFRA_CONTAINER_ID=sandbox1", "K8S_POD_UID=uid-1",
		`"runtimeConfig":{"portMappings":[{"containerPort":80,"hostIP":"","hostPort":8080,"protocol":"tcp"}]}`} {
		for i, l := range lines {
			// DEL replays ADD's arguments from the cache, hostPorts included.
			if !strings.Contains(l, want) {
				t.Errorf("call %d lacks %s:\n%s", i, want, l)
			}
		}
	}
}

func TestDelegateGCAndReady(t *testing.T) {
	d, calls := setup(t)
	ctx := context.Background()
	for _, id := range []string{"keep", "gone"} {
		if _, err := d.Setup(ctx, podnet.PodNet{ID: id, NetNS: "/x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.GC(ctx, func(id string) bool { return id == "keep" }); err != nil {
		t.Fatal(err)
	}
	log, _ := os.ReadFile(calls)
	if !strings.Contains(string(log), "DEL gone ") || strings.Contains(string(log), "DEL keep ") {
		t.Errorf("calls:\n%s", log)
	}
	if _, err := d.Status(ctx, "keep"); err != nil {
		t.Error(err)
	}
	os.Remove(filepath.Join(filepath.Dir(calls), "fakenet"))
	if err := d.Ready(ctx); err == nil || !strings.Contains(err.Error(), `plugin "fakenet" is not installed`) {
		t.Errorf("ready without the binary: %v", err)
	}
}
