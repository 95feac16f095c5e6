package cri

import (
	"strconv"
	"testing"

	"ingot.dev/ingot/runtime/oci"
)

// TestImageUser checks what ImageStatus reports as the image's user, which the kubelet's
// runAsNonRoot check reads: a uid only for a number a process can have (0..2^32-2); anything
// else, including a signed or out-of-range number, is a username, which the kubelet refuses to
// run as non-root because it cannot verify it.
func TestImageUser(t *testing.T) {
	for _, tc := range []struct {
		user     string
		uid      string // "": no uid reported
		username string
	}{
		{user: ""},
		{user: "0", uid: "0"},
		{user: "1000:1000", uid: "1000"},
		{user: "4294967294", uid: "4294967294"},
		{user: "app", uid: "", username: "app"},
		{user: "app:0", uid: "", username: "app"},
		{user: "-1", uid: "", username: "-1"},
		{user: "-1:0", uid: "", username: "-1"},
		{user: "+1000", uid: "", username: "+1000"},
		{user: "4294967295", uid: "", username: "4294967295"},
		{user: "99999999999999999999", uid: "", username: "99999999999999999999"},
	} {
		img := toCRIImage(Image{ID: "sha256:abc", Config: oci.ImageConfig{User: tc.user}})
		gotUID := ""
		if img.GetUid() != nil {
			gotUID = strconv.FormatInt(img.GetUid().GetValue(), 10)
		}
		if gotUID != tc.uid || img.GetUsername() != tc.username {
			t.Errorf("image user %q: reported uid %q username %q, want uid %q username %q",
				tc.user, gotUID, img.GetUsername(), tc.uid, tc.username)
		}
	}
}
