/* Entry of observer.full.min.js: the <script> build with web vitals. */
import './full';
import './global';
