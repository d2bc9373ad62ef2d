// Lay out a BPMN file that has no diagram interchange; print only the <bpmndi:BPMNDiagram> element(s).
import { readFileSync } from 'node:fs';
import { layoutProcess } from 'bpmn-auto-layout';
const xml = readFileSync(process.argv[2], 'utf8');
const out = await layoutProcess(xml);
const m = out.match(/<bpmndi:BPMNDiagram[\s\S]*<\/bpmndi:BPMNDiagram>/);
process.stdout.write(m ? m[0] : '');
