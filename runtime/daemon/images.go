package daemon

import (
	"context"

	"github.com/google/go-containerregistry/pkg/authn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/cri"
	"ingot.dev/ingot/runtime/images"
	"ingot.dev/ingot/runtime/oci"
)

// imageAdapter presents the image store to the CRI server.
type imageAdapter struct{ s *images.Store }

func toCRI(img images.Image) cri.Image {
	c := img.Config
	return cri.Image{ID: img.ID, RepoTags: img.RepoTags, RepoDigests: img.RepoDigests, Size: uint64(img.Size),
		Config: oci.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User,
			WorkingDir: c.WorkingDir, StopSignal: c.StopSignal}}
}

func (a imageAdapter) Pull(ctx context.Context, ref string, auth *runtimeapi.AuthConfig) (cri.Image, error) {
	var opts images.PullOptions
	if auth != nil && (auth.GetUsername() != "" || auth.GetAuth() != "" || auth.GetIdentityToken() != "" || auth.GetRegistryToken() != "") {
		opts.Auth = authn.FromConfig(authn.AuthConfig{Username: auth.GetUsername(), Password: auth.GetPassword(),
			Auth: auth.GetAuth(), IdentityToken: auth.GetIdentityToken(), RegistryToken: auth.GetRegistryToken()})
	}
	img, err := a.s.Pull(ctx, ref, opts)
	if err != nil {
		return cri.Image{}, err
	}
	return toCRI(img), nil
}

func (a imageAdapter) Get(ref string) (cri.Image, error) {
	img, err := a.s.Get(ref)
	if err != nil {
		return cri.Image{}, err
	}
	return toCRI(img), nil
}

func (a imageAdapter) List() ([]cri.Image, error) {
	imgs, err := a.s.List()
	if err != nil {
		return nil, err
	}
	out := make([]cri.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toCRI(img))
	}
	return out, nil
}

func (a imageAdapter) Remove(ref string) error            { return a.s.Remove(ref) }
func (a imageAdapter) Layers(id string) ([]string, error) { return a.s.Layers(id) }
func (a imageAdapter) FsInfo() (string, uint64, uint64, error) {
	used, inodes, mp, err := a.s.FsInfo()
	return mp, used, inodes, err
}
