package testimages

import (
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Entry is one image reference that critest v1.37.0 (sigs.k8s.io/cri-tools pkg/validate,
// pkg/framework, pkg/benchmark) pulls, and what ingot serves under it.
type Entry struct {
	Ref   string // exactly as critest names it
	Image string // the built image served under Ref (see Recipes); "" when it cannot be served
	Use   string // where critest uses it and what it checks
}

// The registries critest's references name.
const (
	criTools = "gcr.io/k8s-staging-cri-tools/"
	e2e      = "registry.k8s.io/e2e-test-images/"
	ecr      = "public.ecr.aws/docker/library/"
)

// Catalog lists every image critest v1.37.0 uses, in the order of its sources.
func Catalog() []Entry {
	return []Entry{
		{e2e + "busybox:1.29-2", "busybox", "framework.DefaultLinuxContainerImage: most specs; sh, echo, sleep, top, id, ls, cat, touch, mount, hostname, ping, brctl, netstat, pidof, pgrep, ipcs, seq, grep; MaskedPaths masks /bin/ls and expects \"/bin/sh: ls: Permission denied\""},
		{e2e + "nginx:1.14-2", "nginx", "networking/streaming webServerImage on port 80; security context: /var/run/nginx.pid, \"master process\" in /proc/1/cmdline, pidof nginx"},
		{e2e + "httpd:2.4.39-4", "httpd", "multi-container pod: port 80, a log line containing \"httpd\", exec echo"},
		{e2e + "nonewprivs:1.3", "nonewprivs", "NoNewPrivs: setuid-root program printing \"Effective uid: N\""},
		{criTools + "hostnet-nginx-amd64", "hostnet-nginx", "host-network web server on port 12003 (name ends in critest's GOARCH)"},
		{criTools + "hostnet-nginx-arm64", "hostnet-nginx", "as above, for an arm64 critest"},
		{criTools + "test-image-user-uid", "test-image-user-uid", "ImageStatus uid 1002"},
		{criTools + "test-image-user-username", "test-image-user-username", "ImageStatus username www-data"},
		{criTools + "test-image-user-uid-group", "test-image-user-uid-group", "ImageStatus uid 1003 (USER 1003:1004)"},
		{criTools + "test-image-user-username-group", "test-image-user-username-group", "ImageStatus username www-data (USER www-data:1004)"},
		{criTools + "test-image-predefined-group", "test-image-predefined-group", "SupplementalGroupsPolicy: user 1000 in group 50000 in /etc/group"},
		{criTools + "test-image-latest", "test-image-latest", "pull without tag"},
		{criTools + "test-image-tag:test", "test-image-tag-test", "pull with tag; image ID consistency; image volumes (needs /bin/sh, /bin/ls, /etc/passwd)"},
		{criTools + "test-image-tag:all", "test-image-tag-all", "ImageStatus by tag, digest and ID"},
		{criTools + "test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", "", "pull by digest: the digest of Google's build cannot be reproduced; the spec fails for every runtime here"},
		{criTools + "test-image-1:latest", "test-image-1", "ListImages: three different images"},
		{criTools + "test-image-2:latest", "test-image-2", "ListImages: three different images"},
		{criTools + "test-image-3:latest", "test-image-3", "ListImages: three different images"},
		{criTools + "test-image-tags:1", "test-image-tags", "one image under three tags"},
		{criTools + "test-image-tags:2", "test-image-tags", "one image under three tags"},
		{criTools + "test-image-tags:3", "test-image-tags", "one image under three tags"},
		{"registry.k8s.io/pause:3.9", "pause", "same image from two registries: one image ID"},
		{"k8s.gcr.io/pause:3.9", "pause", "same image from two registries: one image ID"},
		{ecr + "busybox:1", "bench-busybox-1", "critest -benchmark image listing"},
		{ecr + "busybox:1-glibc", "bench-busybox-1-glibc", "critest -benchmark image listing"},
		{ecr + "busybox:1-musl", "bench-busybox-1-musl", "critest -benchmark image listing"},
	}
}

// Hosts are the registries of the catalog, sorted, as containerd names mirrors (docker.io for
// Docker Hub).
func Hosts() []string {
	seen := map[string]bool{}
	for _, e := range Catalog() {
		host, _, _ := strings.Cut(e.Ref, "/")
		seen[host] = true
	}
	hosts := make([]string, 0, len(seen))
	for h := range seen {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// Recipe says how one image is built. Every image is built for each requested architecture from
// the same recipe.
type Recipe struct {
	Name   string
	From   string    // one line: what the image is made of
	Base   bool      // starts from the busybox base layer (see the package documentation)
	Config v1.Config // entrypoint, cmd, user, env, working dir, ports, stop signal
	// extra fills the image's own layer above the base; nil for none.
	extra func(t tree, b *inputs)
}

// pathEnv is the PATH of Docker's busybox image.
const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// marker adds an empty file named like the image, as cri-tools' images/image-test Dockerfile
// does ("ADD ${TEST} ${TEST}"), so each such image has its own digest.
func marker(name string) func(tree, *inputs) {
	return func(t tree, _ *inputs) { t.file(name, 0o644, nil) }
}

func busyboxImage(name, from string, extra func(tree, *inputs)) Recipe {
	return Recipe{Name: name, From: from, Base: true, extra: extra,
		Config: v1.Config{Env: []string{pathEnv}, Cmd: []string{"sh"}}}
}

func userImage(name, user string) Recipe {
	r := busyboxImage(name, "busybox base, USER "+user, nil)
	r.Config.User = user
	return r
}

func nginxImage(name string, port, exposed, stopSignal string) Recipe {
	return Recipe{
		Name: name, Base: true,
		From: "busybox base + webserver stand-in as /usr/sbin/nginx, conf.d listening on " + port,
		Config: v1.Config{
			Env:          []string{pathEnv, "NGINX_VERSION=stand-in"},
			Cmd:          []string{"nginx", "-g", "daemon off;"},
			ExposedPorts: map[string]struct{}{exposed + "/tcp": {}},
			StopSignal:   stopSignal,
		},
		extra: func(t tree, b *inputs) {
			t.file("usr/sbin/nginx", 0o755, b.webserver)
			t.file("etc/nginx/conf.d/default.conf", 0o644, []byte("server {\n    listen       "+port+";\n    server_name  localhost;\n    location / {\n        root   /usr/share/nginx/html;\n        index  index.html;\n    }\n}\n"))
			t.file("usr/share/nginx/html/index.html", 0o644, []byte("<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1><p>ingot test stand-in.</p></body></html>\n"))
			t.dir("var/cache/nginx", 0o755)
		},
	}
}

// Recipes are the images ingot builds, by name.
func Recipes() []Recipe {
	return []Recipe{
		busyboxImage("busybox", "busybox base (Debian busybox-static applets, non-standalone sh, stand-ins)", nil),
		nginxImage("nginx", "80", "80", "SIGTERM"),
		nginxImage("hostnet-nginx", "12003", "80", "SIGQUIT"),
		{
			Name: "httpd", Base: true,
			From: "busybox base + webserver stand-in as /usr/local/apache2/bin/httpd-foreground",
			Config: v1.Config{
				Env:          []string{"PATH=/usr/local/apache2/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HTTPD_PREFIX=/usr/local/apache2"},
				Cmd:          []string{"httpd-foreground"},
				WorkingDir:   "/usr/local/apache2",
				ExposedPorts: map[string]struct{}{"80/tcp": {}},
				StopSignal:   "SIGWINCH",
			},
			extra: func(t tree, b *inputs) {
				t.file("usr/local/apache2/bin/httpd-foreground", 0o755, b.webserver)
				t.file("usr/local/apache2/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n"))
			},
		},
		{
			Name: "nonewprivs", Base: true,
			From:   "busybox base + standin as setuid-root /usr/local/bin/nnp",
			Config: v1.Config{Env: []string{pathEnv}, Entrypoint: []string{"/usr/local/bin/nnp"}},
			extra: func(t tree, b *inputs) {
				t.file("usr/local/bin/nnp", 0o4755, b.standin)
			},
		},
		{
			Name: "pause", Base: false,
			From:   "standin as /pause only, USER 65535:65535",
			Config: v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535", WorkingDir: "/"},
			extra: func(t tree, b *inputs) {
				t.file("pause", 0o755, b.standin)
			},
		},
		userImage("test-image-user-uid", "1002"),
		userImage("test-image-user-username", "www-data"),
		userImage("test-image-user-uid-group", "1003:1004"),
		userImage("test-image-user-username-group", "www-data:1004"),
		func() Recipe {
			r := busyboxImage("test-image-predefined-group", "busybox base + default-user(1000) in group-defined-in-image(50000), USER 1000", func(t tree, _ *inputs) {
				t.file("etc/passwd", 0o644, []byte(passwd+"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"))
				t.file("etc/group", 0o644, []byte(group+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"))
				t.dir("home/default-user", 0o755)
			})
			r.Config.User = "1000"
			return r
		}(),
		busyboxImage("test-image-latest", "busybox base + empty /test-image-latest", marker("test-image-latest")),
		busyboxImage("test-image-tag-test", "busybox base + empty /test", marker("test")),
		busyboxImage("test-image-tag-all", "busybox base + empty /all", marker("all")),
		busyboxImage("test-image-1", "busybox base + empty /test-image-1", marker("test-image-1")),
		busyboxImage("test-image-2", "busybox base + empty /test-image-2", marker("test-image-2")),
		busyboxImage("test-image-3", "busybox base + empty /test-image-3", marker("test-image-3")),
		busyboxImage("test-image-tags", "busybox base + empty /same-image", marker("same-image")),
		busyboxImage("bench-busybox-1", "busybox base + empty /bench-busybox-1", marker("bench-busybox-1")),
		busyboxImage("bench-busybox-1-glibc", "busybox base + empty /bench-busybox-1-glibc", marker("bench-busybox-1-glibc")),
		busyboxImage("bench-busybox-1-musl", "busybox base + empty /bench-busybox-1-musl", marker("bench-busybox-1-musl")),
	}
}

// passwd and group are those of Docker's busybox image.
const (
	passwd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`
	group = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
`
)
