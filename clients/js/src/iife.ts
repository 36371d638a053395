// The entry of the <script> bundle: `AgoraRTM` is the default export, as the reference's CDN
// file defines it (`const { RTM } = AgoraRTM;`).
import AgoraRTM from './index.js';

export default AgoraRTM;
