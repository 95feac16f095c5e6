package pid1

import (
	"log/slog"
	"strings"
	"testing"

	"ingot.dev/ingot/profiles"
)

// TestPlanRuntimeRootWalkable: /var/lib/ingot, the runtime's root, is 0711 as containerd's root
// is, and /var/lib 0755 (the identity phase may have made it 0700 first): a pod in a user namespace is not root on the node and must walk (not list) the way to its
// rootfs under it, or its pause container fails to start (critest's NamespaceMode_POD spec in the
// VM: "remount-propagation dst=/var/lib/ingot/pause …: permission denied").
func TestPlanRuntimeRootWalkable(t *testing.T) {
	p, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	plan := (&Node{log: slog.New(slog.DiscardHandler)}).Plan(p, nil).String()
	if !strings.Contains(plan, "mkdir /var/lib 0755\n  mkdir /var/lib/ingot 0711\n") {
		t.Fatalf("the plan does not make /var/lib 0755, then /var/lib/ingot 0711:\n%s", plan)
	}
}
