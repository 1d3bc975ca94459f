package main

import (
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/berth-dev/berth/netplug"
)

// reportChosenPorts says on stderr, one line each, which host port berth
// chose for each of asked that left it to berth (-p 127.0.0.1::80): a
// foreground run has no other place to say it, and without it the port
// could only be guessed. Ports the caller named are not repeated. On a
// raw terminal (-t) a line needs its carriage return.
//
// The line is for people: it shares stderr with the workload, which is
// running by then and may print a line just like it. A program should ask
// for the port where the workload cannot answer: the Go API's
// Sandbox.Attachment, or berth port of a detached sandbox.
func reportChosenPorts(stderr io.Writer, tty bool, asked []netplug.PortMapping, a *netplug.Attachment) {
	if a == nil || len(a.Ports) != len(asked) {
		return
	}
	eol := "\n"
	if tty {
		eol = "\r\n"
	}
	for i, p := range a.Ports {
		if asked[i].HostPort != 0 || p.HostPort == 0 {
			continue
		}
		ip := p.HostIP
		if ip == "" {
			ip = "0.0.0.0"
		}
		fmt.Fprintf(stderr, "berth: published %d/%s on %s%s", p.ContainerPort, protocol(p), net.JoinHostPort(ip, strconv.Itoa(int(p.HostPort))), eol)
	}
}

// protocol is p's protocol, "tcp" when it names none.
func protocol(p netplug.PortMapping) string {
	if p.Protocol == "" {
		return "tcp"
	}
	return p.Protocol
}
