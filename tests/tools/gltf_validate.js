#!/usr/bin/env node
// Runs the Khronos glTF validator (npm gltf-validator) on each GLB/glTF file given.
// Usage: node tests/tools/gltf_validate.js file.glb...
// Prints one summary line per file plus every error, warning and info (hints are only
// counted), and exits 1 if any file has an error or cannot be read/parsed, else 0.
'use strict';

const fs = require('fs');
const path = require('path');

let validator;
try {
    validator = require('gltf-validator');
} catch (e) {
    console.error('gltf_validate: cannot load gltf-validator (run `npm ci --prefix tests`): ' + e.message);
    process.exit(2);
}

const SEVERITY = ['error', 'warning', 'info', 'hint'];

async function validateFile(file) {
    let bytes;
    try {
        bytes = fs.readFileSync(file);
    } catch (e) {
        console.log(`${file}: cannot read: ${e.message}`);
        return false;
    }
    let report;
    try {
        report = await validator.validateBytes(new Uint8Array(bytes), {
            uri: path.basename(file),
            maxIssues: 200,
        });
    } catch (e) {
        // A rejection means the validator could not even tell glTF from GLB.
        console.log(`${file}: validator rejected the file: ${e}`);
        return false;
    }
    const issues = report.issues;
    const info = report.info || {};
    console.log(`${file}: ${issues.numErrors} errors, ${issues.numWarnings} warnings, ` +
                `${issues.numInfos} infos, ${issues.numHints} hints` +
                (info.totalVertexCount !== undefined ? ` (${info.totalVertexCount} vertices,` +
                 ` ${info.drawCallCount} draw calls)` : ''));
    for (const m of issues.messages) {
        if (m.severity > 2) continue;  // hints: counted above, not listed
        console.log(`  ${SEVERITY[m.severity] || m.severity} ${m.code}: ${m.message}` +
                    (m.pointer ? ` at ${m.pointer}` : '') +
                    (m.offset !== undefined ? ` (byte ${m.offset})` : ''));
    }
    return issues.numErrors === 0;
}

async function main() {
    const files = process.argv.slice(2);
    if (files.length === 0) {
        console.error('usage: gltf_validate.js file.glb...');
        process.exit(2);
    }
    let ok = true;
    for (const f of files) {
        if (!(await validateFile(f))) ok = false;
    }
    process.exit(ok ? 0 : 1);
}

main();
