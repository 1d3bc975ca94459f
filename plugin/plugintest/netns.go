package plugintest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/osthread"
)

// newNetns makes a network namespace, bind-mounted on the file dir/name
// as `ip netns add` does in /run/netns, so that it lives without a
// process and the plugin reaches it by path. removeNetns undoes it.
func newNetns(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", err
	}
	f.Close()
	errc := make(chan error, 1)
	osthread.Go(func() {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare a network namespace: %w", err)
			return
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind the network namespace on %s: %w", path, err)
			return
		}
		errc <- nil
	})
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// removeNetns unmounts and removes a namespace of newNetns.
func removeNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// inNetns runs f with a netlink handle in the namespace at path.
func inNetns(path string, f func(h *netlink.Handle) error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	return f(h)
}

// nsLinks names the interfaces in the namespace at path but lo.
func nsLinks(path string) ([]string, error) {
	var names []string
	err := inNetns(path, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		for _, l := range links {
			if n := l.Attrs().Name; n != "lo" {
				names = append(names, n)
			}
		}
		return err
	})
	return names, err
}

// checkAttached reports how the namespace at path differs from what
// Attach said it got: the interface, up, with every address, and the
// default route through the gateway if it named one.
func checkAttached(path, ifName string, addrs []netip.Prefix, gateway netip.Addr) error {
	return inNetns(path, func(h *netlink.Handle) error {
		if ifName == "" {
			return errors.New("the attachment names no interface")
		}
		link, err := h.LinkByName(ifName)
		if err != nil {
			have, _ := nsLinks(path)
			return fmt.Errorf("interface %q is not in the namespace (it has %q): %w", ifName, have, err)
		}
		var errs []error
		if link.Attrs().Flags&(1<<0) == 0 { // IFF_UP
			errs = append(errs, fmt.Errorf("interface %q is down", ifName))
		}
		if len(addrs) == 0 {
			errs = append(errs, errors.New("the attachment reports no address"))
		}
		got, err := h.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		var have []netip.Prefix
		for _, a := range got {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				ones, _ := a.Mask.Size()
				have = append(have, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		for _, want := range addrs {
			if !slices.Contains(have, want) {
				errs = append(errs, fmt.Errorf("interface %q lacks address %v that the attachment reports (it has %v)", ifName, want, have))
			}
		}
		if gateway.IsValid() {
			routes, err := h.RouteList(nil, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			found := false
			for _, r := range routes {
				if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.Unmap() == gateway {
					found = true
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("no route in the namespace goes through the gateway %v that the attachment reports", gateway))
			}
		}
		return errors.Join(errs...)
	})
}

// hostNet is what the host's network namespace holds that a network
// plugin could leave behind: interfaces, their addresses, routes.
type hostNet struct {
	links  map[int]string  // index → name
	kinds  map[int]string  // index → link type
	addrs  map[string]bool // "name addr/len"
	routes map[string]bool // route, as netlink prints it, with the interface's name
}

func readHostNet() (*hostNet, error) {
	n := &hostNet{links: map[int]string{}, kinds: map[int]string{}, addrs: map[string]bool{}, routes: map[string]bool{}}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		a := l.Attrs()
		n.links[a.Index], n.kinds[a.Index] = a.Name, l.Type()
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue // gone meanwhile
		}
		for _, ad := range addrs {
			n.addrs[a.Name+" "+ad.IPNet.String()] = true
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		n.routes[fmt.Sprintf("%s dev %s", r, n.links[r.LinkIndex])] = true
	}
	return n, nil
}

// leftSince reports what now holds that before did not, but for what
// keep (filepath.Match patterns of interface names) allows. New veths
// are not reported: a veth's other end would be in one of the kit's
// namespaces, which are checked on their own, and the host's veths come
// and go with the other sandboxes of the machine.
func (before *hostNet) leftSince(now *hostNet, keep []string) []string {
	keptName := func(name string) bool {
		for _, p := range keep {
			if ok, _ := filepath.Match(p, name); ok {
				return true
			}
		}
		return false
	}
	var left []string
	for idx, name := range now.links {
		if _, ok := before.links[idx]; !ok && now.kinds[idx] != "veth" && !keptName(name) {
			left = append(left, fmt.Sprintf("interface %s (%s)", name, now.kinds[idx]))
		}
	}
	old := map[string]bool{}
	for _, name := range before.links {
		old[name] = true
	}
	for a := range now.addrs {
		name, _, _ := strings.Cut(a, " ")
		if !before.addrs[a] && old[name] && !keptName(name) {
			left = append(left, "address "+a)
		}
	}
	for r := range now.routes {
		i := strings.LastIndex(r, " dev ")
		name := r[i+len(" dev "):]
		if !before.routes[r] && old[name] && !keptName(name) {
			left = append(left, "route "+r)
		}
	}
	slices.Sort(left)
	return left
}

// listenInNetns listens on TCP port in the namespace at path, on all its
// addresses, and answers every connection with greeting until the
// listener is closed.
func listenInNetns(path string, port uint16, greeting string) (net.Listener, error) {
	type result struct {
		l   net.Listener
		err error
	}
	c := make(chan result, 1)
	osthread.Go(func() {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			c <- result{err: err}
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			c <- result{err: fmt.Errorf("enter network namespace %s: %w", path, err)}
			return
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		c <- result{l, err}
	})
	r := <-c
	if r.err != nil {
		return nil, r.err
	}
	go func() {
		for {
			conn, err := r.l.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte(greeting))
			conn.Close()
		}
	}()
	return r.l, nil
}
