package integration

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/internal/testgate"
)

// TestPodStatsAndEvents: `crictl statsp` reports a running pod's CPU time, memory and the
// traffic of its ping to its gateway on the built-in network; a GetContainerEvents stream opened
// before the pod sees the pod and its container created, started, stopped and deleted, in order.
func TestPodStatsAndEvents(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)

	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan *runtimeapi.ContainerEventResponse, 100)
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()
	// The stream is open once the server sent its headers: it subscribed before that.
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}

	pod := r.MustCrictl("runp", podConfig(t, r, "statsp"))
	script := `ping -c 3 -W 1 $(ip route | awk '/^default/ {print $3}'); echo pinged; exec sleep 300`
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "pinger", "sh", "-c", script), podConfig(t, r, "statsp"))
	r.MustCrictl("start", ctr)
	waitFor(t, "the container's ping to its gateway", 30*time.Second, func() bool {
		out, _ := r.Crictl("logs", ctr)
		return strings.Contains(out, "pinged")
	})
	if out, _ := r.Crictl("logs", ctr); !strings.Contains(out, "3 packets received") {
		t.Errorf("the pod's ping to its gateway got no answers:\n%s", out)
	}

	type value struct{ Value string }
	var stats struct {
		Stats []struct {
			Attributes struct{ ID string }
			Linux      struct {
				CPU     struct{ UsageCoreNanoSeconds, UsageNanoCores value }
				Memory  struct{ WorkingSetBytes, UsageBytes value }
				Process struct{ ProcessCount value }
				Network struct {
					DefaultInterface struct {
						Name                                 string
						RxBytes, TxBytes, RxErrors, TxErrors value
					}
				}
				Containers []struct{ Attributes struct{ ID string } }
			}
		}
	}
	out := r.MustCrictl("statsp", "-o", "json", "--id", pod)
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatalf("crictl statsp: %v\n%s", err, out)
	}
	t.Logf("crictl statsp:\n%s", out)
	num := func(v value) uint64 { n, _ := strconv.ParseUint(v.Value, 10, 64); return n }
	if len(stats.Stats) != 1 {
		t.Fatalf("crictl statsp --id %s: %d pods\n%s", pod, len(stats.Stats), out)
	}
	st := stats.Stats[0]
	l := st.Linux
	ifc := l.Network.DefaultInterface
	if st.Attributes.ID != pod || num(l.CPU.UsageCoreNanoSeconds) == 0 || num(l.Memory.WorkingSetBytes) == 0 ||
		num(l.Process.ProcessCount) == 0 || ifc.Name != "eth0" || num(ifc.RxBytes) == 0 || num(ifc.TxBytes) == 0 ||
		len(l.Containers) != 1 || l.Containers[0].Attributes.ID != ctr {
		t.Errorf("crictl statsp: want the pod's CPU, memory, processes, eth0 traffic and its container; got\n%s", out)
	}
	// A ping is 3 × (84 bytes of ICMP and IP + 14 of Ethernet) each way, plus ARP.
	if num(ifc.TxBytes) < 3*98 || num(ifc.RxBytes) < 3*98 {
		t.Errorf("eth0 counters rx %d tx %d bytes, want at least the ping's 294 each way", num(ifc.RxBytes), num(ifc.TxBytes))
	}

	// The kubelet's /metrics/cadvisor from the CRI: each metric has a descriptor; the pod's eth0
	// and the container's memory are there with the values the kernel counts.
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	descs, err := rt.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, d := range descs.GetDescriptors() {
		keys[d.GetName()] = len(d.GetLabelKeys())
	}
	metrics, err := rt.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]uint64{}
	for _, pm := range metrics.GetPodMetrics() {
		all := pm.GetMetrics()
		for _, cm := range pm.GetContainerMetrics() {
			all = append(all, cm.GetMetrics()...)
		}
		for _, m := range all {
			if n, ok := keys[m.GetName()]; !ok || n != len(m.GetLabelValues()) {
				t.Errorf("metric %s %v has no matching descriptor", m.GetName(), m.GetLabelValues())
			}
			values[m.GetName()+strings.Join(m.GetLabelValues(), ",")] = m.GetValue().GetValue()
		}
	}
	if v := values["container_network_receive_bytes_total"+pod+",statsp,,eth0"]; v == 0 {
		t.Errorf("container_network_receive_bytes_total of the pod's eth0 = 0; metrics: %v", values)
	}
	if v := values["container_memory_working_set_bytes"+ctr+",pinger,"+busybox]; v == 0 {
		t.Errorf("container_memory_working_set_bytes of the container = 0; metrics: %v", values)
	}

	r.MustCrictl("stop", ctr)
	r.MustCrictl("rm", ctr)
	r.MustCrictl("stopp", pod)
	r.MustCrictl("rmp", pod)
	want := []string{
		"CONTAINER_CREATED_EVENT " + pod, "CONTAINER_STARTED_EVENT " + pod,
		"CONTAINER_CREATED_EVENT " + ctr, "CONTAINER_STARTED_EVENT " + ctr,
		"CONTAINER_STOPPED_EVENT " + ctr, "CONTAINER_DELETED_EVENT " + ctr,
		"CONTAINER_STOPPED_EVENT " + pod, "CONTAINER_DELETED_EVENT " + pod,
	}
	var got []string
	for len(got) < len(want) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the event stream ended after %q", got)
			}
			if ev.GetPodSandboxStatus().GetId() != pod {
				t.Errorf("event %s of %.12s carries pod %q, want %.12s", ev.GetContainerEventType(), ev.GetContainerId(), ev.GetPodSandboxStatus().GetId(), pod)
			}
			got = append(got, ev.GetContainerEventType().String()+" "+ev.GetContainerId())
		case <-time.After(10 * time.Second):
			t.Fatalf("events: got %q, want %q", got, want)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
