package images

import (
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Platform is an image's operating system and CPU architecture.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

// DefaultPlatform is the node's platform: linux on the architecture this binary was built for.
func DefaultPlatform() Platform {
	p := Platform{OS: "linux", Architecture: runtime.GOARCH}
	if p.Architecture == "arm64" {
		p.Variant = "v8"
	}
	return p
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// normalVariant fills in the variant an image may leave out, as containerd's platforms package
// does: arm64 means v8, arm means v7, amd64 means v1.
func normalVariant(arch, variant string) string {
	if variant != "" {
		return variant
	}
	switch arch {
	case "arm64":
		return "v8"
	case "arm":
		return "v7"
	case "amd64":
		return "v1"
	}
	return ""
}

// matches reports whether an image for o runs on p.
func (p Platform) matches(o Platform) bool {
	return p.OS == o.OS && p.Architecture == o.Architecture &&
		normalVariant(p.Architecture, p.Variant) == normalVariant(o.Architecture, o.Variant)
}

func fromV1(p *v1.Platform) Platform {
	if p == nil {
		return Platform{}
	}
	return Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}
