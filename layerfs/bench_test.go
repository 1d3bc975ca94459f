package layerfs

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// reportPercentiles adds p50 and p99 of the sampled durations to the
// benchmark's output; ns/op alone hides the tail.
func reportPercentiles(b *testing.B, samples []time.Duration) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPrepareRelease measures making and tearing down a rootfs from
// the Alpine image. Run with -benchtime=1000x for the median of 1,000.
func BenchmarkPrepareRelease(b *testing.B) {
	for _, driver := range []string{"overlay", "copy"} {
		b.Run(driver, func(b *testing.B) {
			s := newStore(b, &Options{Driver: driver})
			img, err := s.Import(ctx, sharedImage(b, alpineTar), &ImportOptions{Name: "alpine:bench"})
			if err != nil {
				b.Fatal(err)
			}
			samples := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				key := fmt.Sprintf("bench-%d", i)
				if _, err := s.Prepare(ctx, key, img, nil); err != nil {
					b.Fatal(err)
				}
				if err := s.Release(ctx, key); err != nil {
					b.Fatal(err)
				}
				samples = append(samples, time.Since(start))
			}
			b.StopTimer()
			reportPercentiles(b, samples)
		})
	}
}

// BenchmarkPrepareReleaseQuota measures what a disk quota adds to making
// and tearing down a rootfs: on a store without project quotas, as this
// host's, an ext4 filesystem of the rootfs's own on a loop device. Each
// iteration prepares and releases one rootfs without a quota and one with,
// so that both see the same load on a shared machine; the p50 and p99 of
// each are reported apart.
func BenchmarkPrepareReleaseQuota(b *testing.B) {
	for _, size := range []int64{64 << 20, 1 << 30} {
		b.Run(fmt.Sprintf("overlay-%dMiB", size>>20), func(b *testing.B) {
			s := newStore(b, &Options{Driver: "overlay"})
			img, err := s.Import(ctx, sharedImage(b, alpineTar), &ImportOptions{Name: "alpine:bench"})
			if err != nil {
				b.Fatal(err)
			}
			variants := []*PrepareOptions{nil, {DiskQuota: size}}
			samples := [2][]time.Duration{}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for v, opts := range variants {
					start := time.Now()
					key := fmt.Sprintf("bench-%d-%d", i, v)
					if _, err := s.Prepare(ctx, key, img, opts); err != nil {
						b.Fatal(err)
					}
					if err := s.Release(ctx, key); err != nil {
						b.Fatal(err)
					}
					samples[v] = append(samples[v], time.Since(start))
				}
			}
			b.StopTimer()
			for v, name := range []string{"plain", "quota"} {
				slices.Sort(samples[v])
				b.ReportMetric(float64(samples[v][len(samples[v])/2].Microseconds()), name+"-p50-µs")
				b.ReportMetric(float64(samples[v][len(samples[v])*99/100].Microseconds()), name+"-p99-µs")
			}
		})
	}
}

// BenchmarkImportAlpine measures importing the Alpine rootfs tarball into
// an empty store: copy, hash, decompress, hash, unpack, sync, publish.
func BenchmarkImportAlpine(b *testing.B) {
	src := sharedImage(b, alpineTar)
	samples := make([]time.Duration, 0, b.N)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := newStore(b, nil)
		b.StartTimer()
		start := time.Now()
		if _, err := s.Import(ctx, src, &ImportOptions{Name: "alpine:bench"}); err != nil {
			b.Fatal(err)
		}
		samples = append(samples, time.Since(start))
	}
	reportPercentiles(b, samples)
}
