// Command euid prints the effective user ID it runs with. A setuid-root
// copy of it, run by another user, shows whether the mount it lies on
// honours setuid bits. It is built static, to run in any image.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println(os.Geteuid())
}
