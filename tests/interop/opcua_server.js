// A small node-opcua server for the collector's interoperability tests.
//   node opcua_server.js PORT PKI_DIR [--reject-unknown]
// Serves namespace "urn:edge-agent:interop" with Objects/Machines/cnc-01/{MachineState,
// PartsProducedInLifetime, Power (AnalogItem, EURange 0..1000)} on 127.0.0.1:PORT, over
// None and every secure policy in Sign and SignAndEncrypt modes, anonymous or user
// "edge" / password "s3cret". Client certificates are accepted automatically, unless
// --reject-unknown: then an unknown client certificate is refused and saved into
// PKI_DIR/pki/rejected/, and trusted once moved into PKI_DIR/pki/trusted/certs/ (the
// certificate manager watches its folders), as an operator would do.
// Prints one JSON line {"ready": true, "certificate": "<base64 DER>"} once listening,
// then applies JSON lines from stdin such as {"parts": 5, "power": 12.5, "state": 2}.
"use strict";
const path = require("path");
const readline = require("readline");
const {
    OPCUAServer, OPCUACertificateManager, Variant, DataType, StatusCodes,
    MessageSecurityMode, SecurityPolicy, standardUnits,
} = require("node-opcua");

const port = parseInt(process.argv[2], 10);
const pkiDir = process.argv[3];
const rejectUnknown = process.argv.slice(4).includes("--reject-unknown");

async function main() {
    const serverCertificateManager = new OPCUACertificateManager({
        automaticallyAcceptUnknownCertificate: !rejectUnknown,
        rootFolder: path.join(pkiDir, "pki"),
    });
    await serverCertificateManager.initialize();
    const server = new OPCUAServer({
        port,
        hostname: "127.0.0.1",
        alternateHostname: ["127.0.0.1"],
        serverCertificateManager,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign,
            MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256,
            SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss],
        allowAnonymous: true,
        userManager: { isValidUser: (user, password) => user === "edge" && password === "s3cret" },
        serverInfo: { applicationUri: "urn:edge-agent:interop:node-opcua",
            applicationName: { text: "interop node-opcua" } },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace("urn:edge-agent:interop");
    const machines = ns.addFolder(addressSpace.rootFolder.objects, { browseName: "Machines" });
    const cnc = ns.addObject({ organizedBy: machines, browseName: "cnc-01" });
    const state = ns.addVariable({
        componentOf: cnc, browseName: "MachineState", nodeId: "s=cnc-01.MachineState",
        dataType: "Int32", value: { dataType: DataType.Int32, value: 1 },
    });
    const parts = ns.addVariable({
        componentOf: cnc, browseName: "PartsProducedInLifetime", nodeId: "s=cnc-01.Parts",
        dataType: "UInt32", value: { dataType: DataType.UInt32, value: 41 },
    });
    const power = ns.addAnalogDataItem({
        componentOf: cnc, browseName: "Power", nodeId: "s=cnc-01.Power",
        engineeringUnitsRange: { low: 0, high: 1000 }, engineeringUnits: standardUnits.kilowatt,
        dataType: "Double", value: { dataType: DataType.Double, value: 100.0 },
    });
    const vars = {
        state: [state, DataType.Int32], parts: [parts, DataType.UInt32],
        power: [power, DataType.Double],
    };
    await server.start();
    const der = server.getCertificate();
    process.stdout.write(JSON.stringify({ ready: true, certificate: der.toString("base64") }) + "\n");

    const rl = readline.createInterface({ input: process.stdin });
    rl.on("line", (line) => {
        const cmd = JSON.parse(line);
        for (const [key, value] of Object.entries(cmd)) {
            const [variable, dataType] = vars[key];
            variable.setValueFromSource(new Variant({ dataType, value }), StatusCodes.Good, new Date());
        }
        process.stdout.write(JSON.stringify({ applied: cmd }) + "\n");
    });
    rl.on("close", async () => {
        await server.shutdown(0);
        process.exit(0);
    });
}

main().catch((err) => {
    process.stderr.write(String(err && err.stack || err) + "\n");
    process.exit(1);
});
