package images

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"ingot.dev/ingot/runtime/images/content"
)

// reference is an image reference in the canonical form containerd and the kubelet use:
// "docker.io/library/busybox:latest" for "busybox".
type reference struct {
	host   string // registry host; Docker Hub is "docker.io"
	repo   string // repository path, e.g. "library/busybox"
	tag    string // empty when the reference is by digest
	digest string // "sha256:<hex>", empty when by tag
}

// parseReference normalises s ("busybox", "ghcr.io/o/r:v1", "r@sha256:…", "r:tag@sha256:…": the
// digest wins).
func parseReference(s string) (reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return reference{}, fmt.Errorf("%w: image reference %q: %v", ErrInvalid, s, err)
	}
	r := reference{host: ref.Context().RegistryStr(), repo: ref.Context().RepositoryStr()}
	if r.host == name.DefaultRegistry {
		r.host = "docker.io"
	}
	switch v := ref.(type) {
	case name.Digest:
		r.digest = v.DigestStr()
		if _, err := content.CheckDigest(r.digest); err != nil {
			return reference{}, fmt.Errorf("%w: image reference %q: %v", ErrInvalid, s, err)
		}
	case name.Tag:
		r.tag = v.TagStr()
	}
	return r, nil
}

// Name is the repository name, "docker.io/library/busybox".
func (r reference) Name() string { return r.host + "/" + r.repo }

// String is the canonical reference: name:tag or name@digest.
func (r reference) String() string {
	if r.digest != "" {
		return r.Name() + "@" + r.digest
	}
	return r.Name() + ":" + r.tag
}

// identifier is what the registry is asked for: the digest or the tag.
func (r reference) identifier() string {
	if r.digest != "" {
		return r.digest
	}
	return r.tag
}

// splitRepoDigest splits "name@sha256:…" into name and digest.
func splitRepoDigest(s string) (repoName, digest string) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}
