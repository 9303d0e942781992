// cnidriver: a minimal container-runtime-side CNI client on Debian's libcni, as containerd/CRI-O use it.
//
//	cnidriver <add|check|del|validate> <conf-dir> <network-name> <netns-path> <container-id> [ifname]
//
// Plugins come from CNI_PATH (colon-separated); results are cached in CNI_CACHE_DIR (like /var/lib/cni).
// CNIDRIVER_CAPABILITY_ARGS (a JSON object, e.g. {"portMappings":[...]}) becomes the runtime's capability
// args, which libcni hands as runtimeConfig to the plugins that declare those capabilities (as kubelet does).
// add prints the result as JSON; errors print "error: ..." on stderr and exit 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func main() {
	if len(os.Args) < 6 {
		fmt.Fprintln(os.Stderr, "usage: cnidriver <add|check|del|validate> <conf-dir> <net> <netns> <container-id> [ifname]")
		os.Exit(2)
	}
	verb, confDir, name, netns, cid := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	ifname := "eth0"
	if len(os.Args) > 6 {
		ifname = os.Args[6]
	}
	list, err := libcni.LoadConfList(confDir, name)
	if err != nil {
		fail(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: cid,
		NetNS:       netns,
		IfName:      ifname,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", strings.ToLower(cid)},
			{"K8S_POD_INFRA_CONTAINER_ID", cid},
		},
	}
	if capArgs := os.Getenv("CNIDRIVER_CAPABILITY_ARGS"); capArgs != "" {
		if err := json.Unmarshal([]byte(capArgs), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("CNIDRIVER_CAPABILITY_ARGS: %w", err))
		}
	}
	ctx := context.Background()
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	case "validate":
		var caps []string
		caps, err = cni.ValidateNetworkList(ctx, list)
		if err == nil {
			fmt.Println(strings.Join(caps, ","))
		}
	default:
		err = fmt.Errorf("unknown verb %q", verb)
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}
