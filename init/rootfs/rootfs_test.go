package rootfs

import "testing"

func TestRootIsRootfs(t *testing.T) {
	initramfs := "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n2 1 0:5 / /proc rw - proc proc rw\n"
	tmpfs := "20 1 0:25 / / rw,relatime - tmpfs tmpfs rw,mode=755\n"
	if !rootIsRootfs(initramfs) {
		t.Error("initramfs root not detected")
	}
	if rootIsRootfs(tmpfs) {
		t.Error("tmpfs root taken for the initramfs")
	}
}
