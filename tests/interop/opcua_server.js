// A small node-opcua server for the collector's interoperability tests.
//   node opcua_server.js PORT PKI_DIR [--reject-unknown] [--umati]
// Serves namespace "urn:edge-agent:interop" with Objects/Machines/cnc-01/{MachineState,
// PartsProducedInLifetime, Power (AnalogItem, EURange 0..1000)} on 127.0.0.1:PORT, over
// None and every secure policy in Sign and SignAndEncrypt modes, anonymous or user
// "edge" / password "s3cret". Client certificates are accepted automatically, unless
// --reject-unknown: then an unknown client certificate is refused and saved into
// PKI_DIR/pki/rejected/, and trusted once moved into PKI_DIR/pki/trusted/certs/ (the
// certificate manager watches its folders), as an operator would do.
// Prints one JSON line {"ready": true, "certificate": "<base64 DER>"} once listening,
// then applies JSON lines from stdin such as {"parts": 5, "power": 12.5, "state": 2}.
// --umati also loads the published OPC 40501-1 nodeset (with DI, Machinery, IA, ISA-95 job
// control and Machinery Jobs, as node-opcua ships them) and instantiates MachineToolType
// as Objects/Machines/cnc-01 (browse name in the namespace above) with MachineryItemState,
// OperationCounters/PartsProducedInLifetime, JobIdentifier, JobNodeId and a ProductionPlan;
// {"umati": {"program": "Running", "mode": 1, "item": "Executing", "lifetime": 41,
// "job": "J1", "good": 3, "completed": 4}} sets the program state, OperationMode,
// MachineryItemState, the lifetime counter and the active job's counters ("job" adds a new
// job to the plan and makes it the active program's job).
"use strict";
const path = require("path");
const readline = require("readline");
const {
    OPCUAServer, OPCUACertificateManager, Variant, DataType, StatusCodes,
    MessageSecurityMode, SecurityPolicy, standardUnits, nodesets, promoteToStateMachine, VariantArrayType,
} = require("node-opcua");

const port = parseInt(process.argv[2], 10);
const pkiDir = process.argv[3];
const rejectUnknown = process.argv.slice(4).includes("--reject-unknown");
const umati = process.argv.slice(4).includes("--umati");

// The umati MachineTool of OPC 40501-1, instantiated from the published types.
function machineTool(addressSpace, ns) {
    const mtNs = addressSpace.getNamespaceIndex("http://opcfoundation.org/UA/MachineTool/");
    const maNs = addressSpace.getNamespaceIndex("http://opcfoundation.org/UA/Machinery/");
    const machines = addressSpace.findNode(`ns=${maNs};i=1001`);
    const tool = addressSpace.findObjectType("MachineToolType", mtNs).instantiate({
        browseName: { name: "cnc-01", namespaceIndex: ns.index }, organizedBy: machines,
        optionals: ["Production.ProductionPlan", "Monitoring.MachineTool.MachineryItemState",
            "Monitoring.MachineTool.OperationCounters", "Production.ActiveProgram.JobIdentifier",
            "Production.ActiveProgram.JobNodeId"],
    });
    const child = (node, name, nsIndex) => node.getChildByName(name, nsIndex);
    const monitoring = child(child(tool, "Monitoring", mtNs), "MachineTool", mtNs);
    const production = child(tool, "Production", mtNs);
    const active = child(production, "ActiveProgram", mtNs);
    const plan = child(production, "ProductionPlan", mtNs);
    const lifetime = ns.addVariable({
        componentOf: child(monitoring, "OperationCounters", addressSpace.getNamespaceIndex(
            "http://opcfoundation.org/UA/DI/")),
        browseName: { name: "PartsProducedInLifetime", namespaceIndex: mtNs },
        dataType: "UInt64",
        value: { dataType: DataType.UInt64, arrayType: VariantArrayType.Scalar, value: [0, 0] },
    });
    const program = promoteToStateMachine(child(active, "State", mtNs));
    program.setState("Initializing");
    const item = promoteToStateMachine(child(monitoring, "MachineryItemState", maNs));
    item.setState("NotExecuting");
    const mode = child(monitoring, "OperationMode", mtNs);
    const jobType = addressSpace.findObjectType("ProductionJobType", mtNs);
    const jobs = {};
    let current = null;
    const now = (variable, dataType, value) => variable.setValueFromSource(
        new Variant({ dataType, arrayType: VariantArrayType.Scalar, value }), StatusCodes.Good,
        new Date());
    const addJob = (identifier) => {
        const job = jobType.instantiate({
            browseName: { name: identifier, namespaceIndex: ns.index }, componentOf: plan,
            optionals: ["PartsGood", "PartsCompleted"],
        });
        now(child(job, "Identifier", mtNs), DataType.String, identifier);
        for (const name of ["PartsGood", "PartsCompleted", "RunsCompleted", "RunsPlanned"]) {
            now(child(job, name, mtNs), DataType.UInt32, 0);
        }
        promoteToStateMachine(child(job, "State", mtNs)).setState("Running");
        jobs[identifier] = job;
        current = job;
        now(child(active, "JobIdentifier", mtNs), DataType.String, identifier);
        now(child(active, "JobNodeId", mtNs), DataType.NodeId, job.nodeId);
    };
    return (cmd) => {
        if (cmd.job !== undefined) addJob(cmd.job);
        if (cmd.program !== undefined) program.setState(cmd.program);
        if (cmd.item !== undefined) item.setState(cmd.item);
        if (cmd.mode !== undefined) now(mode, DataType.Int32, cmd.mode);
        if (cmd.lifetime !== undefined) now(lifetime, DataType.UInt64, [0, cmd.lifetime]);
        if (current && cmd.good !== undefined) now(child(current, "PartsGood", mtNs), DataType.UInt32, cmd.good);
        if (current && cmd.completed !== undefined) {
            now(child(current, "PartsCompleted", mtNs), DataType.UInt32, cmd.completed);
        }
    };
}

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
        ...(umati ? { nodeset_filename: [nodesets.standard, nodesets.di, nodesets.ia,
            nodesets.machinery, nodesets.isa95JobControl, nodesets.machineryJobs,
            nodesets.machineTool] } : {}),
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
    const setUmati = umati ? machineTool(addressSpace, ns) : null;
    await server.start();
    const der = server.getCertificate();
    process.stdout.write(JSON.stringify({ ready: true, certificate: der.toString("base64") }) + "\n");

    const rl = readline.createInterface({ input: process.stdin });
    rl.on("line", (line) => {
        const cmd = JSON.parse(line);
        for (const [key, value] of Object.entries(cmd)) {
            if (key === "umati") {
                setUmati(value);
                continue;
            }
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
