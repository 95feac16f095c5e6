package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/qemu"
)

// TestCrictlInVM drives crictl in the dev image's console as a person at `make qemu` would:
// `crictl stats` shows a running container's memory, `crictl exec -it` gives the command a
// terminal and its stdin, `crictl attach -it` reaches a container started with stdin and a tty,
// and `crictl port-forward` carries a connection to a pod's port. The console shell's stdin is
// the serial terminal, so crictl's -t has the tty it asks for.
func TestCrictlInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	const archName = "amd64"
	RequireVM(t, archName)
	imgs, err := testimages.Build(context.Background(), testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	profile := filepath.Join(t.TempDir(), "critest-dev.toml")
	if err := os.WriteFile(profile, devWithMirrors(t), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := BootWith(t, qemu.Config{Image: Image(t, profile, archName), Boot: qemu.BootDirect, Memory: 2048,
		GuestFwd: []string{registryFwd(t, imgs, guestRegistry)}})
	vm.WaitReady(bootTimeout)
	vm.Prompt(shellTimeout)

	const long = 4 * time.Minute
	const busybox, nginx = "registry.k8s.io/e2e-test-images/busybox:1.29-2", "registry.k8s.io/e2e-test-images/nginx:1.14-2"
	vm.MustShell("crictl pull "+busybox+" >/dev/null && crictl pull "+nginx+" >/dev/null", long)
	vm.MustShell(`echo '{"metadata":{"name":"streams","namespace":"default","uid":"streams-uid"},"log_directory":"/var/log/pods/streams","linux":{}}' >/tmp/pod.json`, shellTimeout)
	ctr := func(file, name, image, extra string) {
		vm.MustShell(fmt.Sprintf(`echo '{"metadata":{"name":%q},"image":{"image":%q},%s"log_path":"%s.log","linux":{}}' >%s`,
			name, image, extra, name, file), shellTimeout)
	}
	ctr("/tmp/sleep.json", "sleep", busybox, `"command":["sleep","3600"],`)
	// Echoes each line it reads as echo-LINE and exits at "quit": stdin and a tty, for attach.
	ctr("/tmp/echo.json", "echo", busybox, `"command":["sh","-c","while read l; do [ \"$l\" = quit ] && exit 0; echo echo-$l; done"],"stdin":true,"tty":true,`)
	ctr("/tmp/web.json", "web", nginx, "")
	vm.MustShell("POD=$(crictl runp /tmp/pod.json) && "+
		"SLEEP=$(crictl create $POD /tmp/sleep.json /tmp/pod.json) && crictl start $SLEEP && "+
		"ECHO=$(crictl create $POD /tmp/echo.json /tmp/pod.json) && crictl start $ECHO && "+
		"WEB=$(crictl create $POD /tmp/web.json /tmp/pod.json) && crictl start $WEB", long)

	t.Run("stats", func(t *testing.T) {
		vm := vm.In(t)
		out := vm.MustShell("crictl stats -o json $SLEEP", long)
		var st struct {
			Stats []struct {
				Attributes struct{ Metadata struct{ Name string } }
				Memory     struct{ WorkingSetBytes struct{ Value string } }
			}
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("crictl stats -o json: %v:\n%s", err, out)
		}
		if len(st.Stats) != 1 || st.Stats[0].Attributes.Metadata.Name != "sleep" {
			t.Fatalf("crictl stats $SLEEP shows %+v, want the sleep container:\n%s", st.Stats, out)
		}
		if n, _ := strconv.ParseUint(st.Stats[0].Memory.WorkingSetBytes.Value, 10, 64); n == 0 {
			t.Fatalf("crictl stats: the running sleep container uses %q bytes of memory, want more than 0:\n%s",
				st.Stats[0].Memory.WorkingSetBytes.Value, out)
		}
	})

	t.Run("exec-it", func(t *testing.T) {
		vm := vm.In(t)
		// The markers are built by the command, so the echo of the typed line never matches them.
		vm.Start(`timeout 120 crictl exec -it $SLEEP sh -c 'tty; echo "type"-now; read x; echo "got"-"$x"'`, long)
		vm.Expect("type-now", long)
		out := vm.Console.Output()
		if !regexp.MustCompile(`/dev/pts/[0-9]+`).MatchString(out[vm.cur.started:]) {
			t.Errorf("tty in crictl exec -it printed no /dev/pts/N:\n%s", tail(out[vm.cur.started:], 2000))
		}
		if err := vm.Console.Send("hello\n"); err != nil {
			t.Fatal(err)
		}
		vm.Expect("got-hello", long)
		if out, code := vm.Finish(long); code != 0 {
			t.Errorf("crictl exec -it exited %d:\n%s", code, out)
		}
	})

	t.Run("attach", func(t *testing.T) {
		vm := vm.In(t)
		vm.Start("timeout 120 crictl attach -it $ECHO", long)
		// Whatever is typed before the attach stream is up waits in the terminal for crictl.
		if err := vm.Console.Send("ping\n"); err != nil {
			t.Fatal(err)
		}
		vm.Expect("echo-ping", long)
		if err := vm.Console.Send("quit\n"); err != nil {
			t.Fatal(err)
		}
		if out, code := vm.Finish(long); code != 0 {
			t.Errorf("crictl attach -it exited %d after the container ended:\n%s", code, out)
		}
		if state := vm.MustShell("crictl inspect -o go-template --template '{{.status.state}}' $ECHO", long); state != "CONTAINER_EXITED" {
			t.Errorf("the echo container is %s after quit, want CONTAINER_EXITED", state)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		vm := vm.In(t)
		vm.MustShell("crictl port-forward $POD 18080:80 >/tmp/pf.log 2>&1 & PF=$!", shellTimeout)
		deadline := time.Now().Add(time.Minute)
		for {
			// timeout(1), not wget -T: busybox 1.35's wget -T crashes on a refused connection.
			out, _ := vm.Shell("timeout 10 wget -q -O - http://127.0.0.1:18080/ 2>&1", long)
			if strings.Contains(out, "Welcome to nginx") {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("no page through crictl port-forward $POD 18080:80; wget: %q; crictl: %q", out,
					vm.MustShell("cat /tmp/pf.log", shellTimeout))
				break
			}
			time.Sleep(2 * time.Second)
		}
		vm.Shell("kill $PF", shellTimeout)
	})

	vm.MustShell("crictl rmp -f $POD", long)
	vm.PowerOff(archName, qemu.BootDirect)
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}
