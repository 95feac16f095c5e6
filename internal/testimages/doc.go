// Package testimages builds the container images critest (sigs.k8s.io/cri-tools v1.37.0) pulls,
// from Debian packages and small static Go programs, and serves them from an in-process registry
// under the names critest uses, reached through registry mirrors configured the containerd way.
// Nothing is pulled from a public registry. It is test support: it must never be imported by the
// node binary.
//
// # Using it
//
//	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{"amd64", "arm64"}})
//	addr, stop, err := testimages.Serve(ctx, imgs)
//	defer stop()
//	cfg := testimages.MirrorsTOML(addr)      // config.toml registry.mirrors, or
//	err = testimages.WriteHostsDir(dir, addr) // certs.d/<host>/hosts.toml for config_path
//
// Inside a QEMU guest pass the guestfwd address (10.0.2.100:PORT) instead of addr. critest also
// runs `ipcmk` on its own host (the HostIpc specs); the standin binary in every busybox-based
// image (/bin/ipcmk) is util-linux compatible enough for that.
//
// # What critest pulls and how ingot builds it
//
// Catalog lists the references with what critest does with each; Recipes say how each image is
// built. In short:
//
//	registry.k8s.io/e2e-test-images/busybox:1.29-2   busybox base
//	registry.k8s.io/e2e-test-images/nginx:1.14-2     base + webserver as /usr/sbin/nginx (port 80)
//	registry.k8s.io/e2e-test-images/httpd:2.4.39-4   base + webserver as httpd-foreground (port 80)
//	registry.k8s.io/e2e-test-images/nonewprivs:1.3   base + setuid-root standin as nnp
//	gcr.io/k8s-staging-cri-tools/hostnet-nginx-{amd64,arm64}  base + nginx stand-in on 12003
//	gcr.io/k8s-staging-cri-tools/test-image-user-{uid,username,uid-group,username-group}
//	                                                 base, USER 1002 / www-data / 1003:1004 / www-data:1004
//	gcr.io/k8s-staging-cri-tools/test-image-predefined-group  base + /etc/passwd,group, USER 1000
//	gcr.io/k8s-staging-cri-tools/test-image-{latest,1,2,3}, test-image-tag:{test,all},
//	test-image-tags:{1,2,3}                          base + an empty marker file (tags 1-3 share one)
//	registry.k8s.io/pause:3.9, k8s.gcr.io/pause:3.9  standin as /pause, USER 65535:65535 (one image)
//	public.ecr.aws/docker/library/busybox:{1,1-glibc,1-musl}  base + marker (critest -benchmark)
//
// Not reproducible: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2… names the
// digest of Google's own build, which no other build can produce; "public image with digest
// should be pulled and removed" cannot pass against any runtime using these images, so every
// critest run skips it by name (internal/critest/skip.go says why, with the proof).
//
// # The busybox base layer
//
// Debian's busybox-static with every applet hard-linked into /bin, as Docker's busybox image has
// them. Its ash, though, is built with FEATURE_SH_STANDALONE: it runs applets from inside the
// binary without looking at /bin, so masking /bin/ls (the MaskedPaths spec) would change nothing.
// /bin/sh (and /bin/ash) is therefore Debian's dynamically linked busybox, whose ash executes
// commands from PATH, with the ld.so, libc.so.6 and libresolv.so.2 of Debian's libc6. Debian
// leaves out ipcs, ipcmk and pgrep, which critest uses: cmd/standin provides them. /etc/passwd
// and /etc/group are Docker busybox's (root, www-data 33, nobody 65534, …).
//
// The stand-ins (cmd/standin: ipcs, ipcmk, pgrep, pause, nnp; cmd/webserver: nginx,
// httpd-foreground) use only the standard library and are built from sources embedded in this
// package with CGO_ENABLED=0 for each architecture, offline.
//
// Every image is an OCI image; each reference serves an OCI index with one manifest per built
// architecture (linux/amd64, linux/arm64/v8). Builds are reproducible (fixed mtimes from
// SOURCE_DATE_EPOCH, sorted entries, -trimpath) and cached per architecture as an OCI layout in
// the ingot cache under testimages/<arch>-<hash>, the hash covering the Debian packages, the Go
// toolchain and this package's sources.
//
// # kube-proxy
//
// KubeProxy builds the one image outside critest's catalog: registry.k8s.io/kube-proxy at the
// Kubernetes release ingot pins, which `ingot cluster` workers run as a static pod and the
// cluster e2e test serves from this registry. It holds kube-proxy (bundle.KubernetesBuild) and
// Debian's nft with the libraries its ELF files need and netbase's /etc/protocols, because
// kube-proxy's nftables mode runs `nft -f -` and reads its tables back as text. It is cached
// under testimages/kube-proxy-<arch>-<hash>.
package testimages
