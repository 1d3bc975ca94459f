package plugin

// UseLegacyOverlay makes s mount overlays with mount(2), as it does on
// kernels before 6.8, so that the tests cover that path on new ones.
func UseLegacyOverlay(s *Storage) { s.legacyOverlay = true }

// TestBuild is testBuild, for the tests of package plugin_test.
var TestBuild = testBuild
