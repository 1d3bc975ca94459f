package layerfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// busyboxConfig is the config digest of the shared busybox image, which
// every tool keeps when it converts the image.
const busyboxConfig = "sha256:654fc8fd836e35f4a64586bddf8f59b9029b48cf80f520834c6c98ca8ab5def9"

// tool returns the path of the program name, or skips t saying it is
// missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed: the archives it writes are not checked", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// toolArchive is an archive a real tool wrote, and what importing it must
// give.
type toolArchive struct {
	name        string
	path        string
	format      Format
	importName  string // --name, to pick one image of several
	wantConfig  string // config digest, if known
	wantNames   []string
	wantErrText string // an import that must fail, with this in its error
}

// The archives skopeo and podman write, in every layout they have, import
// as the image they were made from.
func TestImportToolArchives(t *testing.T) {
	busybox := sharedImage(t, busyboxOCI)
	dir := t.TempDir()
	var archives []toolArchive

	t.Run("skopeo", func(t *testing.T) {
		skopeo := tool(t, "skopeo")
		tagged, untagged, oci := filepath.Join(dir, "skopeo.tar"), filepath.Join(dir, "skopeo-untagged.tar"), filepath.Join(dir, "skopeo-oci.tar")
		run(t, skopeo, "copy", "--quiet", "oci:"+busybox, "docker-archive:"+tagged+":busybox:1.38")
		run(t, skopeo, "copy", "--quiet", "oci:"+busybox, "docker-archive:"+untagged)
		run(t, skopeo, "copy", "--quiet", "oci:"+busybox, "oci-archive:"+oci+":busybox:oci")
		archives = append(archives,
			toolArchive{name: "skopeo docker-archive", path: tagged, format: FormatDockerArchive, wantConfig: busyboxConfig, wantNames: []string{"docker.io/library/busybox:1.38"}},
			toolArchive{name: "skopeo docker-archive untagged", path: untagged, format: FormatDockerArchive, wantConfig: busyboxConfig},
			toolArchive{name: "skopeo oci-archive", path: oci, format: FormatOCILayout, wantConfig: busyboxConfig, wantNames: []string{"busybox:oci"}},
		)
	})
	t.Run("podman", func(t *testing.T) {
		podman := tool(t, "podman")
		// A store of its own, which needs no mounts; podman wants a
		// short runroot.
		runroot, err := os.MkdirTemp("", "berth-podman-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(runroot) })
		p := func(args ...string) {
			t.Helper()
			run(t, podman, append([]string{"--root", filepath.Join(dir, "podman"), "--runroot", runroot,
				"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"}, args...)...)
		}
		p("pull", "-q", "oci:"+busybox)
		p("tag", strings.TrimPrefix(busyboxConfig, "sha256:"), "localhost/bb:one", "localhost/bb:two")
		p("import", "-q", sharedImage(t, alpineTar), "localhost/alp:1")
		one, multi, multiTags, oci := filepath.Join(dir, "podman.tar"), filepath.Join(dir, "podman-multi.tar"), filepath.Join(dir, "podman-tags.tar"), filepath.Join(dir, "podman-oci.tar")
		p("save", "-q", "-o", one, "localhost/bb:one")
		p("save", "-q", "-m", "-o", multi, "localhost/bb:one", "localhost/alp:1")
		p("save", "-q", "-m", "-o", multiTags, "localhost/bb:one", "localhost/bb:two")
		p("save", "-q", "--format", "oci-archive", "-o", oci, "localhost/bb:one")
		archives = append(archives,
			toolArchive{name: "podman docker-archive", path: one, format: FormatDockerArchive, wantConfig: busyboxConfig, wantNames: []string{"localhost/bb:one"}},
			toolArchive{name: "podman docker-archive, two tags", path: multiTags, format: FormatDockerArchive, wantConfig: busyboxConfig, wantNames: []string{"localhost/bb:one", "localhost/bb:two"}},
			toolArchive{name: "podman docker-archive, two images", path: multi, format: FormatDockerArchive, wantErrText: "holds 2 images"},
			toolArchive{name: "podman docker-archive, two images, one named", path: multi, format: FormatDockerArchive, importName: "localhost/bb:one", wantConfig: busyboxConfig, wantNames: []string{"localhost/bb:one"}},
			toolArchive{name: "podman docker-archive, two images, the other named", path: multi, format: FormatDockerArchive, importName: "localhost/alp:1", wantNames: []string{"localhost/alp:1"}},
			toolArchive{name: "podman oci-archive", path: oci, format: FormatOCILayout, wantNames: []string{"localhost/bb:one"}},
		)
	})

	for _, a := range archives {
		// The same archive gzipped, as `docker save | gzip` makes.
		gz := a
		gz.name, gz.path = a.name+", gzipped", a.path+".gz"
		for _, tc := range []toolArchive{a, gz} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.path == a.path+".gz" && !exists(tc.path) {
					b, err := os.ReadFile(a.path)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(tc.path, gzipBytes(t, b), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if got, err := DetectFormat(tc.path); err != nil || got != tc.format {
					t.Errorf("DetectFormat: %v, %v; want %v", got, err, tc.format)
				}
				s := newStore(t, nil)
				img, err := s.Import(context.Background(), tc.path, &ImportOptions{Name: tc.importName})
				if tc.wantErrText != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErrText) {
						t.Errorf("Import: %v, want an error saying %q", err, tc.wantErrText)
					}
					checkImported(t, s, img, err)
					return
				}
				if err != nil {
					t.Fatalf("Import: %v", err)
				}
				checkImported(t, s, img, err)
				if tc.wantConfig != "" && img.ConfigDigest.String() != tc.wantConfig {
					t.Errorf("config %s, want %s", img.ConfigDigest, tc.wantConfig)
				}
				if tc.wantConfig == "" && img.ConfigDigest.String() == busyboxConfig && tc.importName == "localhost/alp:1" {
					t.Errorf("imported busybox, not the image named %s", tc.importName)
				}
				if !slices.Equal(img.Names, tc.wantNames) {
					t.Errorf("names %v, want %v", img.Names, tc.wantNames)
				}
				if len(img.Layers) != 1 {
					t.Fatalf("%d layers", len(img.Layers))
				}
				// The image is usable: its root has the shell.
				if !exists(filepath.Join(s.layerDir(img.Layers[0].DiffID), "bin", "sh")) {
					t.Errorf("layer has no /bin/sh")
				}
			})
		}
	}
}
