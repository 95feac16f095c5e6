package pid1

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/init/cgroup"
	"ingot.dev/ingot/init/supervise"
)

// RuntimeSocket is the CRI socket the runtime serves (runtime/config's default).
const RuntimeSocket = "/run/ingot/ingot.sock"

// ServiceLogDir holds each service's output as <name>.log (`ingot-node logs NAME` reads it).
const ServiceLogDir = "/run/ingot/services"

// runtimeSpec supervises `/init runtime`, the CRI daemon (this same binary); echo copies its log
// to the console.
func runtimeSpec(echo bool) supervise.Spec {
	return supervise.Spec{
		Name:      "runtime",
		Path:      "/init",
		Args:      []string{"runtime"},
		Env:       []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"},
		Dir:       "/",
		Restart:   supervise.Always,
		Echo:      echo,
		CgroupDir: filepath.Join(cgroup.Root, cgroup.Services, "runtime"),
	}
}

// waitRuntime blocks until the runtime answers a CRI Status call, saying so on the console every
// 10 s while it does not.
func (n *Node) waitRuntime(ctx context.Context, socket string) {
	start := time.Now()
	last := start
	for {
		if err := criStatus(ctx, socket); err == nil {
			n.log.Info("CRI runtime ready", "socket", socket, "took", time.Since(start).Round(time.Millisecond))
			return
		} else if time.Since(last) > 10*time.Second {
			n.log.Warn("still waiting for the CRI runtime", "socket", socket, "err", err)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func criStatus(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return err
	}
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.RuntimeReady && !c.GetStatus() {
			return fmt.Errorf("runtime not ready: %s", c.GetMessage())
		}
	}
	return nil
}
