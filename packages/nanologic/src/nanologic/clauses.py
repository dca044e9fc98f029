"""The generator's inventory of atomic Spanish clauses, by domain.

Each line is ``subject | predicate (indicative) | predicate (subjunctive)``. The subject may be
empty (impersonal clauses such as "hay backup"). Negation goes between subject and predicate
("el servidor no responde", "no hay backup"), which is where Spanish puts it, clitics included
("no se cae"). The atom's definition is always the positive indicative clause.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCKS = (
    "ciberseguridad",
    "programación",
    "devops y vida tech",
    "lógica académica y cotidiana",
    "mezcla difícil",
)

_CIBERSEGURIDAD = """
el firewall | bloquea el tráfico entrante | bloquee el tráfico entrante
el antivirus | detecta el malware | detecte el malware
| hay una copia de seguridad | haya una copia de seguridad
| hay backup | haya backup
el servidor | se cae | se caiga
el servidor | responde a tiempo | responda a tiempo
los datos | se pierden | se pierdan
el atacante | consigue acceso root | consiga acceso root
la contraseña | es robusta | sea robusta
las contraseñas | se guardan en texto plano | se guarden en texto plano
el usuario | activa la autenticación en dos pasos | active la autenticación en dos pasos
la VPN | está activa | esté activa
el puerto 22 | está abierto | esté abierto
los logs | registran el acceso | registren el acceso
el certificado | ha caducado | haya caducado
el tráfico | va cifrado | vaya cifrado
alguien | abre el adjunto | abra el adjunto
el equipo de seguridad | revisa las alertas | revise las alertas
la alerta | salta a medianoche | salte a medianoche
el ransomware | cifra los discos | cifre los discos
| pagamos el rescate | paguemos el rescate
el parche | se aplica a tiempo | se aplique a tiempo
el sistema | está actualizado | esté actualizado
los atacantes | explotan la vulnerabilidad | exploten la vulnerabilidad
la vulnerabilidad | es pública | sea pública
el correo | es un intento de phishing | sea un intento de phishing
Marta | reporta el incidente | reporte el incidente
el IDS | detecta el escaneo | detecte el escaneo
la red | está segmentada | esté segmentada
el atacante | se mueve lateralmente | se mueva lateralmente
las credenciales | se filtran en internet | se filtren en internet
| cambiamos las claves | cambiemos las claves
la auditoría | encuentra fallos graves | encuentre fallos graves
el pentester | encontró una inyección SQL | haya encontrado una inyección SQL
la aplicación | valida las entradas | valide las entradas
el token | expira en una hora | expire en una hora
la sesión | se cierra sola | se cierre sola
el WAF | filtra la petición | filtre la petición
los empleados | reciben formación | reciban formación
el backup | está cifrado | esté cifrado
el disco | se corrompió | se haya corrompido
la clave privada | quedó expuesta | haya quedado expuesta
| revocamos el certificado | revoquemos el certificado
el honeypot | atrae al atacante | atraiga al atacante
la botnet | lanza un ataque DDoS | lance un ataque DDoS
la web | deja de responder | deje de responder
el proveedor | mitiga el ataque | mitigue el ataque
el script | descarga un binario sospechoso | descargue un binario sospechoso
| aislamos la máquina | aislemos la máquina
la máquina | está comprometida | esté comprometida
el SOC | escala el incidente | escale el incidente
el usuario | tiene permisos de administrador | tenga permisos de administrador
la política de contraseñas | se cumple | se cumpla
los puertos | están filtrados | estén filtrados
el hash | coincide | coincida
la firma del paquete | es válida | sea válida
| instalo la actualización | instale la actualización
el navegador | avisa del certificado | avise del certificado
la cuenta | se bloquea tras tres intentos | se bloquee tras tres intentos
el atacante | borra sus huellas | borre sus huellas
tú | usas un gestor de contraseñas | uses un gestor de contraseñas
"""

_PROGRAMACION = """
el código | compila | compile
los tests | pasan | pasen
el test | falla | falle
el programa | lanza una excepción | lance una excepción
la función | devuelve null | devuelva null
el puntero | es nulo | sea nulo
el bucle | termina | termine
la variable | está inicializada | esté inicializada
el compilador | muestra un warning | muestre un warning
| hay un bug en producción | haya un bug en producción
el índice | se sale del rango | se salga del rango
el array | está vacío | esté vacío
la lista | está ordenada | esté ordenada
la búsqueda binaria | funciona | funcione
el linter | aprueba el código | apruebe el código
| refactorizo el módulo | refactorice el módulo
el código | tiene comentarios | tenga comentarios
la API | devuelve un error 500 | devuelva un error 500
la consulta | tarda más de un segundo | tarde más de un segundo
| añadimos un índice | añadamos un índice
la caché | está caliente | esté caliente
el programa | usa demasiada memoria | use demasiada memoria
el recolector de basura | se ejecuta | se ejecute
la recursión | tiene caso base | tenga caso base
la pila | se desborda | se desborde
Lucía | revisa el pull request | revise el pull request
el pull request | se fusiona | se fusione
la rama | tiene conflictos | tenga conflictos
| hago commit | haga commit
el tipo | es correcto | sea correcto
el método | es público | sea público
la clase | implementa la interfaz | implemente la interfaz
el hilo | queda bloqueado | quede bloqueado
| hay una condición de carrera | haya una condición de carrera
el mutex | está libre | esté libre
la cobertura | supera el ochenta por ciento | supere el ochenta por ciento
el módulo | tiene dependencias circulares | tenga dependencias circulares
el script | se ejecuta sin errores | se ejecute sin errores
la entrada | es válida | sea válida
el parser | acepta la cadena | acepte la cadena
el JSON | está bien formado | esté bien formado
la petición | lleva cabecera de autorización | lleve cabecera de autorización
el frontend | muestra los datos | muestre los datos
el backend | responde con un 200 | responda con un 200
| escribimos tests unitarios | escribamos tests unitarios
el código | es legible | sea legible
la documentación | está al día | esté al día
el algoritmo | es eficiente | sea eficiente
el algoritmo | tiene complejidad cuadrática | tenga complejidad cuadrática
la versión | es compatible | sea compatible
la librería | está deprecada | esté deprecada
| actualizo las dependencias | actualice las dependencias
el build | se rompe | se rompa
el depurador | se detiene en el breakpoint | se detenga en el breakpoint
la función | tiene efectos secundarios | tenga efectos secundarios
el resultado | se guarda en caché | se guarde en caché
Pablo | programa en Rust | programe en Rust
el equipo | hace code review | haga code review
los desarrolladores | usan TypeScript | usen TypeScript
el objeto | es inmutable | sea inmutable
la migración | se ejecutó | se haya ejecutado
la columna | admite valores nulos | admita valores nulos
tú | pruebas el cambio en local | pruebes el cambio en local
"""

_DEVOPS = """
el despliegue | falla | falle
el pipeline | está en verde | esté en verde
el contenedor | se reinicia | se reinicie
el pod | entra en CrashLoopBackOff | entre en CrashLoopBackOff
el clúster | escala automáticamente | escale automáticamente
la CPU | pasa del noventa por ciento | pase del noventa por ciento
el disco | se llena | se llene
el balanceador | reparte la carga | reparta la carga
la base de datos | está caída | esté caída
| hacemos rollback | hagamos rollback
la imagen | se construye bien | se construya bien
el registro | está disponible | esté disponible
el monitor | envía una alerta | envíe una alerta
el on-call | contesta el móvil | conteste el móvil
la latencia | sube | suba
el tráfico | se dispara | se dispare
el DNS | resuelve el dominio | resuelva el dominio
el certificado TLS | se renueva solo | se renueve solo
| desplegamos en viernes | despleguemos en viernes
el equipo | trabaja en remoto | trabaje en remoto
la reunión | se alarga | se alargue
el café | se acaba | se acabe
| tengo reunión a las nueve | tenga reunión a las nueve
el wifi | funciona | funcione
mi portátil | se queda sin batería | se quede sin batería
| trabajo desde casa | trabaje desde casa
el jefe | aprueba el presupuesto | apruebe el presupuesto
la migración a la nube | termina a tiempo | termine a tiempo
la factura de AWS | se dispara | se dispare
| apagamos las instancias de prueba | apaguemos las instancias de prueba
Terraform | aplica los cambios | aplique los cambios
el estado de Terraform | está bloqueado | esté bloqueado
el job de CI | tarda una hora | tarde una hora
la caché del CI | está vacía | esté vacía
el runner | se queda sin memoria | se quede sin memoria
la réplica | está sincronizada | esté sincronizada
el failover | funciona | funcione
la réplica | asume el tráfico | asuma el tráfico
| hay mantenimiento programado | haya mantenimiento programado
los usuarios | notan el corte | noten el corte
el SLA | se cumple | se cumpla
el postmortem | se publica | se publique
la alerta | es un falso positivo | sea un falso positivo
el equipo | duerme tranquilo | duerma tranquilo
el servicio | arranca | arranque
la configuración | está en el repositorio | esté en el repositorio
Ansible | llega a todos los nodos | llegue a todos los nodos
el nodo | responde al ping | responda al ping
el volumen | se montó bien | se haya montado bien
el backup nocturno | terminó | haya terminado
los logs | ocupan demasiado | ocupen demasiado
| rotamos los logs | rotemos los logs
Kubernetes | programa el pod | programe el pod
el health check | devuelve OK | devuelva OK
el release | sale hoy | salga hoy
el cliente | se queja | se queje
Sergio | está de guardia | esté de guardia
| pido otro café | pida otro café
la demo | sale bien | salga bien
el equipo | celebra el lanzamiento | celebre el lanzamiento
nosotros | automatizamos el despliegue | automaticemos el despliegue
tú | revisas los dashboards | revises los dashboards
"""

_LOGICA = """
| llueve | llueva
| me mojo | me moje
| llevo paraguas | lleve paraguas
| hace frío | haga frío
| hace sol | haga sol
| nieva | nieve
| salgo a correr | salga a correr
| me quedo en casa | me quede en casa
el suelo | está mojado | esté mojado
Juan | estudia | estudie
Juan | aprueba el examen | apruebe el examen
María | va a la fiesta | vaya a la fiesta
Pedro | va a la fiesta | vaya a la fiesta
el número | es par | sea par
el número | es divisible por cuatro | sea divisible por cuatro
el número | es primo | sea primo
el triángulo | es equilátero | sea equilátero
el triángulo | es isósceles | sea isósceles
la función | es continua | sea continua
la función | es derivable | sea derivable
la serie | converge | converja
x | es mayor que cero | sea mayor que cero
el conjunto | está vacío | esté vacío
| tengo hambre | tenga hambre
| como pizza | coma pizza
| voy al cine | vaya al cine
el tren | llega tarde | llegue tarde
| pierdo el autobús | pierda el autobús
| llego tarde al trabajo | llegue tarde al trabajo
el despertador | suena | suene
| me duermo | me duerma
la tienda | está abierta | esté abierta
| compro pan | compre pan
Ana | cocina | cocine
Luis | friega los platos | friegue los platos
los niños | juegan en el parque | jueguen en el parque
el perro | ladra | ladre
el gato | duerme en el sofá | duerma en el sofá
la luz | está encendida | esté encendida
| hay alguien en casa | haya alguien en casa
el coche | arranca | arranque
la batería | está cargada | esté cargada
| estudio lógica | estudie lógica
| entiendo la demostración | entienda la demostración
el profesor | explica el teorema | explique el teorema
los alumnos | hacen preguntas | hagan preguntas
la premisa | es verdadera | sea verdadera
la conclusión | es falsa | sea falsa
el argumento | es válido | sea válido
Sócrates | es mortal | sea mortal
| hay clase mañana | haya clase mañana
el partido | se suspende | se suspenda
el estadio | se llena | se llene
mi hermana | viene a cenar | venga a cenar
| preparo la cena | prepare la cena
la sopa | está caliente | esté caliente
las plantas | crecen | crezcan
| riego las plantas | riegue las plantas
el río | se desborda | se desborde
| hay tormenta | haya tormenta
el vuelo | se retrasó | se haya retrasado
| viajamos en verano | viajemos en verano
el museo | cierra los lunes | cierre los lunes
Carmen | ganó la carrera | haya ganado la carrera
ellos | llegan a tiempo | lleguen a tiempo
"""

_MEZCLA = """
la startup | consigue financiación | consiga financiación
el producto | tiene usuarios | tenga usuarios
la empresa | contrata más ingenieros | contrate más ingenieros
el modelo | converge | converja
la pérdida | baja | baje
el modelo | sobreajusta | sobreajuste
| hay datos suficientes | haya datos suficientes
la GPU | tiene memoria suficiente | tenga memoria suficiente
| reducimos el batch | reduzcamos el batch
el learning rate | es demasiado alto | sea demasiado alto
el gradiente | explota | explote
la validación | mejora | mejore
el paper | se acepta | se acepte
los revisores | piden más experimentos | pidan más experimentos
el experimento | es reproducible | sea reproducible
la semilla | está fijada | esté fijada
el dataset | tiene fugas | tenga fugas
la métrica | es fiable | sea fiable
el cliente | firma el contrato | firme el contrato
el proyecto | se retrasa | se retrase
el presupuesto | alcanza | alcance
la reunión | se cancela | se cancele
Elena | lidera el equipo | lidere el equipo
el equipo | entrega el sprint | entregue el sprint
los requisitos | cambian | cambien
| contratamos un becario | contratemos un becario
el becario | rompe producción | rompa producción
la oficina | está cerrada | esté cerrada
el metro | va lleno | vaya lleno
| voy en bici | vaya en bici
la app | se vuelve viral | se vuelva viral
los servidores | aguantan la carga | aguanten la carga
el inversor | pierde la paciencia | pierda la paciencia
el mercado | cae | caiga
las ventas | suben | suban
el equipo de ventas | cumple el objetivo | cumpla el objetivo
la auditoría externa | aprueba las cuentas | apruebe las cuentas
Diego | pide vacaciones | pida vacaciones
la jefa | está de acuerdo | esté de acuerdo
el contrato | incluye soporte | incluya soporte
el vuelo a Madrid | sale puntual | salga puntual
| llego a la entrevista | llegue a la entrevista
la entrevista | va bien | vaya bien
| me ofrecen el puesto | me ofrezcan el puesto
| acepto la oferta | acepte la oferta
el sueldo | es competitivo | sea competitivo
la mudanza | sale cara | salga cara
el piso | tiene calefacción | tenga calefacción
| pagamos el alquiler a tiempo | paguemos el alquiler a tiempo
el casero | sube el precio | suba el precio
la conferencia | se celebra en Barcelona | se celebre en Barcelona
la charla | se graba | se grabe
el público | hace preguntas difíciles | haga preguntas difíciles
los vecinos | hacen ruido | hagan ruido
| duermo ocho horas | duerma ocho horas
el examen final | es tipo test | sea tipo test
la beca | se renueva | se renueve
"""


@dataclass(frozen=True)
class Clause:
    """One atomic proposition and how to say it."""

    subject: str  # may be empty for impersonal clauses
    indicative: str  # predicate in the indicative mood
    subjunctive: str  # predicate in the present (or perfect) subjunctive
    block: str

    def text(self, negated: bool = False, mood: str = "ind", tampoco: bool = False) -> str:
        predicate = self.indicative if mood == "ind" else self.subjunctive
        negation = "tampoco" if tampoco else ("no" if negated else "")
        return " ".join(part for part in (self.subject, negation, predicate) if part)

    @property
    def definition(self) -> str:
        """The atom's definition: the positive clause in the indicative."""
        return self.text()


def _parse_bank(text: str, block: str) -> list[Clause]:
    clauses = []
    for line in text.strip().splitlines():
        subject, indicative, subjunctive = (part.strip() for part in line.split("|"))
        clauses.append(Clause(subject, indicative, subjunctive, block))
    return clauses


CLAUSES: dict[str, list[Clause]] = {
    BLOCKS[0]: _parse_bank(_CIBERSEGURIDAD, BLOCKS[0]),
    BLOCKS[1]: _parse_bank(_PROGRAMACION, BLOCKS[1]),
    BLOCKS[2]: _parse_bank(_DEVOPS, BLOCKS[2]),
    BLOCKS[3]: _parse_bank(_LOGICA, BLOCKS[3]),
    BLOCKS[4]: _parse_bank(_MEZCLA, BLOCKS[4]),
}
