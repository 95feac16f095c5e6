package testimages

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// MirrorPath is where a registry mirror serves ref: its repository path without the registry
// host, and its tag or digest. containerd asks a mirror endpoint http://ADDR configured for host H
// for H/REPO:TAG at http://ADDR/v2/REPO/manifests/TAG; Docker Hub's short names get "library/".
//
//	registry.k8s.io/e2e-test-images/busybox:1.29-2  → e2e-test-images/busybox, 1.29-2
//	busybox                                          → library/busybox, latest
func MirrorPath(ref string) (repo, id string, err error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", "", fmt.Errorf("parse image reference %q: %w", ref, err)
	}
	return r.Context().RepositoryStr(), r.Identifier(), nil
}

// Serve starts an in-process registry (go-containerregistry's pkg/registry) on 127.0.0.1:0 and
// pushes every image to it at its MirrorPath, so a runtime whose mirrors for the catalog's hosts
// point at http://addr pulls them under their original names. The same paths suit critest's
// --registry-prefix=addr. The registry serves until stop is called or ctx is done.
func Serve(ctx context.Context, images []Image) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen for the test registry: %w", err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go srv.Serve(l)
	stop = sync.OnceFunc(func() { srv.Close() })
	unhook := context.AfterFunc(ctx, stop)
	addr = l.Addr().String()

	pushed := map[string]v1.Hash{} // repo:id → index digest
	for _, im := range images {
		if err := push(ctx, addr, im, pushed); err != nil {
			unhook()
			stop()
			return "", nil, err
		}
	}
	return addr, stop, nil
}

func push(ctx context.Context, addr string, im Image, pushed map[string]v1.Hash) error {
	repo, id, err := MirrorPath(im.Ref)
	if err != nil {
		return err
	}
	digest, err := im.Index.Digest()
	if err != nil {
		return fmt.Errorf("digest of test image %s: %w", im.Ref, err)
	}
	key := repo + "@" + id
	if prev, ok := pushed[key]; ok {
		if prev != digest {
			return fmt.Errorf("serve test image %s: %s/%s already holds a different image", im.Ref, repo, id)
		}
		return nil
	}
	sep := ":"
	if strings.HasPrefix(id, "sha256:") {
		sep = "@"
	}
	dst, err := name.ParseReference(addr+"/"+repo+sep+id, name.Insecure)
	if err != nil {
		return fmt.Errorf("serve test image %s: %w", im.Ref, err)
	}
	if err := remote.WriteIndex(dst, im.Index, remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push test image %s to %s: %w", im.Ref, dst, err)
	}
	pushed[key] = digest
	return nil
}

// mirrorKey is how containerd names a registry host in its mirror configuration.
func mirrorKey(host string) string {
	if host == name.DefaultRegistry || host == "registry-1.docker.io" {
		return "docker.io"
	}
	return host
}

// upstream is the server a hosts.toml names for host.
func upstream(host string) string {
	if mirrorKey(host) == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + host
}

// MirrorsTOML is a containerd config.toml (version 2) fragment pointing the registry of every
// catalog host at http://addr. addr is the registry as the runtime sees it: Serve's address on
// the host, or the guestfwd address inside a QEMU guest. containerd does not allow these mirrors
// together with registry.config_path; use WriteHostsDir for that form.
func MirrorsTOML(addr string) string {
	var b strings.Builder
	for _, h := range Hosts() {
		fmt.Fprintf(&b, "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n  endpoint = [%q]\n\n", mirrorKey(h), "http://"+addr)
	}
	return b.String()
}

// HostsTOML is containerd's certs.d/<host>/hosts.toml sending pulls and resolves for host to
// http://addr.
func HostsTOML(host, addr string) string {
	return fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", upstream(host), "http://"+addr)
}

// WriteHostsDir writes dir/<host>/hosts.toml for every catalog host, for a runtime configured
// with registry.config_path = dir.
func WriteHostsDir(dir, addr string) error {
	var errs []error
	for _, h := range Hosts() {
		d := filepath.Join(dir, mirrorKey(h))
		if err := os.MkdirAll(d, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(HostsTOML(h, addr)), 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("write registry hosts for the test images: %w", err)
	}
	return nil
}
